/*
 * The durable state of one shard: one LMDB environment holding commands,
 * the dedupe index, per-device FIFO queues, the deadline index and the
 * status event log.  A shard thread owns its store exclusively: nothing
 * here is thread safe, and at most one transaction is open at a time.
 *
 * Durability: the environment is opened with LMDB's default (synchronous)
 * flags; a commit returns only after fsync.  Never MDB_NOSYNC,
 * MDB_NOMETASYNC, MDB_MAPASYNC or MDB_WRITEMAP.
 *
 * Named databases:
 *   meta    "schema", "shard", "next_cmd", "next_q",
 *           "applied" (cluster mode: the last log entry taken) -> u64 big endian
 *   cmd     id                  -> command record (msgpack map)
 *   idemlog id                  -> 32-byte request hash || tenant \0 key
 *   active  id                  -> u64be(deadline) 0x01 u64be(queue position)
 *                                  device   (non-terminal, in a device queue)
 *   events  u64be(seq)          -> event (msgpack map)
 *   session vin \0 domain       -> opaque session bytes
 *   tcount  tenant              -> u64be(last tseq given to the tenant)
 *   tindex  tenant \0 u64be(tseq) -> u64be(seq)   (the tenant's events)
 *   sched   u64be(not_before) id -> device        (scheduled commands, not
 *                                                  in `active` until due)
 *   camp    campaign \0 id      -> ""            (a campaign's device
 *                                                  commands on this shard)
 *
 * tseq numbers one tenant's events of this shard 1, 2, 3..., assigned with
 * the event's seq in the same transaction.  The counters are kept in
 * memory (loaded from `tcount` on open); commit writes the row of each
 * tenant the transaction gave events to, once, and an aborted transaction
 * leaves the counters as they were.  Stores written before tseq existed
 * open as they are: their events have no tseq and are not in `tindex`,
 * and each tenant's first new event gets tseq 1.
 *
 * Retention (retention.h) deletes from the other end: the oldest events
 * with their `tindex` rows, the records (and keys) of commands terminal
 * for longer than the retention, and keys past the dedupe window.  It
 * never touches `tcount`, `meta`, `active`, `sched` or `session`, and keeps the
 * log's last event, from which the next seq is derived on open.
 *
 * Every key written on the submit path grows monotonically (ids and seqs),
 * so a group commit appends to the right edge of each B-tree and dirties
 * few pages.  Lookups by (tenant, key) go through an in-memory table
 * (idem.h) rebuilt from `idemlog` when the store is opened; the per-device
 * queues and the deadline heap (devq.h) are rebuilt by the shard from
 * `active`.
 */
#ifndef FQ_STORE_H
#define FQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"
#include "fleetq/wire.h"

#define FQ_ID_LEN 16              /* ids are 16 lower-case hex digits */
#define FQ_TENANT_MAX 64          /* tenant names: 1..64 of [A-Za-z0-9._-] */
#define FQ_DEVICE_MAX 32          /* "v:" + VIN or "s:" + decimal site id */
#define FQ_REASON_MAX 512
#define FQ_MAX_TRANSITIONS 64
#define FQ_SCHEMA_VERSION 1

typedef struct fq_store fq_store_t;

typedef struct fq_transition {
  int state;
  int64_t at;
} fq_transition_t;

/* A command as stored.  `params` is owned by the record (malloc'd) and
 * freed by fq_cmdrec_free(). */
typedef struct fq_cmdrec {
  char id[FQ_ID_LEN + 1];
  char tenant[65];
  char key[129];
  char account[129];
  char vin[18];        /* "" for sites */
  uint64_t site;       /* 0 for vehicles */
  char device[FQ_DEVICE_MAX];
  char command[48];
  uint8_t *params;     /* msgpack map or NULL */
  size_t params_len;
  uint8_t hash[32];
  int state;
  char reason[FQ_REASON_MAX];
  int error;           /* project error code or 0 */
  int http;            /* 0 = none */
  int fault;           /* -1 = none */
  uint32_t attempts;
  int64_t created, updated, deadline;
  int64_t ttl_ms;
  bool coalesce;
  bool no_wake;        /* submitted with `wake: false` */
  uint32_t wakes;      /* wake_up requests sent for this command */
  int64_t not_before;  /* unix ms the command was scheduled for; 0: none */
  char campaign[65];   /* the campaign that made it (issue 16); "" for none */
  uint64_t qseq;
  size_t ntrans;
  fq_transition_t trans[FQ_MAX_TRANSITIONS];
} fq_cmdrec_t;

void fq_cmdrec_free(fq_cmdrec_t *rec);

/* Open (creating if needed) the store of shard `shard` in directory dir
 * (created 0700 if missing), with an LMDB map of map_size bytes.  Clears
 * stale reader slots left by a killed process.  Refuses a store written by
 * another shard number or schema.  NULL on error, with err filled. */
fq_store_t *fq_store_open(const char *dir, unsigned shard, uint64_t map_size, fq_err_t *err);
void fq_store_destroy(fq_store_t **sp);

/* The restart snapshot (store.c, "The dedupe snapshot"): at a clean stop,
 * the in-memory dedupe table and the caller's words (extra, extra_len
 * bytes, a multiple of 8: the shard's queues) are written to
 * FQ_STORE_SNAP_NAME in the store's directory (0600; a temporary file,
 * fsynced, renamed), stamped with LMDB's last transaction id and the
 * store's identity.  fq_store_open uses it instead of scanning `idemlog`
 * only when the stamp matches the store exactly and the checksum holds,
 * and deletes it either way: a later write, a crash or a restored backup
 * makes it stale.  Call with no transaction open, after the last write of
 * the process; 0 or an error (the next start then rebuilds, as without
 * one). */
#define FQ_STORE_SNAP_NAME "restart.snap"
int fq_store_save_snapshot(fq_store_t *s, const void *extra, size_t extra_len, fq_err_t *err);
/* The caller's words of the snapshot this open used (*nwords of them), or
 * NULL when there were none; valid until fq_store_snapshot_release, which
 * unmaps them (fq_store_destroy does too). */
const uint64_t *fq_store_snapshot_extra(const fq_store_t *s, size_t *nwords);
void fq_store_snapshot_release(fq_store_t *s);
/* Whether this open took its dedupe table from the snapshot (tests). */
bool fq_store_from_snapshot(const fq_store_t *s);

/* Transactions.  begin(write) opens the one transaction; commit makes it
 * durable (fsync) or fails; abort drops it.  A failed commit leaves the
 * store without a transaction (and changes nothing on disk: LMDB writes
 * its meta page last).  Codes: 0, FQ_ESTORFULL (map full, or the disk:
 * ENOSPC, EDQUOT), FQ_ESTORAGE (anything else from LMDB or the disk, EIO
 * included, with its text in err). */
int fq_store_begin(fq_store_t *s, bool write, fq_err_t *err);
int fq_store_commit(fq_store_t *s, fq_err_t *err);
void fq_store_abort(fq_store_t *s);

/* Counters, valid inside and outside transactions; the new values are
 * written by commit. */
uint64_t fq_store_next_seq(const fq_store_t *s);  /* next event seq */
unsigned fq_store_shard(const fq_store_t *s);

/* Allocate the next command id and queue sequence number (inside a write
 * transaction; persisted by commit). */
void fq_store_new_id(fq_store_t *s, char id[FQ_ID_LEN + 1], uint64_t *qseq);

/* Shard number encoded in an id, or -1 if id is malformed. */
int fq_store_id_shard(const char *id, size_t len);

/* Dedupe index (in-memory table verified against `idemlog`).  get: 0 and
 * hash/id filled, FQ_ENOTFOUND, or FQ_ESTORAGE.  put records a new
 * command's (tenant, key) inside the open write transaction. */
int fq_store_idem_get(fq_store_t *s, const char *tenant, size_t tlen, const char *key,
                      size_t klen, uint8_t hash[32], char id[FQ_ID_LEN + 1], fq_err_t *err);
int fq_store_idem_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err);

/* Visit the (tenant, key) hash of every remembered command (see idem.h),
 * outside or inside a transaction. */
int fq_store_idem_foreach(fq_store_t *s, int (*fn)(void *ud, uint64_t h, uint64_t num), void *ud);

/* Command records.  get fills rec (caller frees with fq_cmdrec_free);
 * FQ_ENOTFOUND when absent.  put inserts or replaces. */
int fq_store_cmd_get(fq_store_t *s, const char *id, size_t len, fq_cmdrec_t *rec, fq_err_t *err);
int fq_store_cmd_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err);
/* The raw stored map of a command (borrowed until the transaction ends). */
int fq_store_cmd_raw(fq_store_t *s, const char *id, size_t len, const uint8_t **p, size_t *n,
                     fq_err_t *err);

/* Membership of a non-terminal command in `active` (the durable source of
 * the in-memory queues and deadline heap). */
int fq_store_active_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err);
int fq_store_active_del(fq_store_t *s, const char *id, fq_err_t *err);
/* Visit every non-terminal command in id order (= queue order). */
typedef int (*fq_store_active_fn)(void *ud, const char *id, const char *device,
                                  int64_t deadline);
int fq_store_active_scan(fq_store_t *s, fq_store_active_fn fn, void *ud, fq_err_t *err);
/* The same with each command's queue position (the order of its device's
 * queue: a scheduled command entered it when its time came). */
typedef int (*fq_store_active_q_fn)(void *ud, const char *id, const char *device,
                                    int64_t deadline, uint64_t qpos);
int fq_store_active_scan_q(fq_store_t *s, fq_store_active_q_fn fn, void *ud, fq_err_t *err);
/* A fresh queue position (inside a write transaction; persisted by
 * commit): for a scheduled command entering its queue. */
uint64_t fq_store_new_qseq(fq_store_t *s);

/* Scheduled commands (`sched`): a command with a not_before ahead waits
 * here, outside every queue, until its time.  put / del by (not_before,
 * id); due visits the rows with not_before <= upto, earliest first, at
 * most max (fn returns non-zero to stop; that value is returned); next
 * gives the earliest not_before (INT64_MAX when none) and how many rows
 * there are.  Inside a transaction. */
int fq_store_sched_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err);
int fq_store_sched_del(fq_store_t *s, int64_t not_before, const char *id, fq_err_t *err);
typedef int (*fq_store_sched_fn)(void *ud, int64_t not_before, const char *id);
int fq_store_sched_due(fq_store_t *s, int64_t upto, size_t max, fq_store_sched_fn fn, void *ud,
                       fq_err_t *err);
int fq_store_sched_next(fq_store_t *s, int64_t *not_before, size_t *count, fq_err_t *err);

/* Campaigns: camp_put records that command id belongs to campaign (inside
 * a write transaction); camp_scan visits the ids of campaign's commands on
 * this shard (fn returns non-zero to stop; that value is returned).  Rows
 * stay when retention deletes a command: a visitor meets FQ_ENOTFOUND for
 * its record and skips it. */
int fq_store_camp_put(fq_store_t *s, const char *campaign, const char *id, fq_err_t *err);
typedef int (*fq_store_camp_fn)(void *ud, const char *id);
int fq_store_camp_scan(fq_store_t *s, const char *campaign, fq_store_camp_fn fn, void *ud,
                       fq_err_t *err);

/* The per-shard number of an id (its last 14 hex digits), and back. */
uint64_t fq_store_id_num(const char *id);
void fq_store_id_format(unsigned shard, uint64_t num, char id[FQ_ID_LEN + 1]);

/* The tseq the next event of tenant will get (1 for a tenant without
 * events); inside a write transaction it counts that transaction's
 * appends, like fq_store_next_seq. */
uint64_t fq_store_next_tseq(const fq_store_t *s, const char *tenant, size_t tlen);

/* Append a packed event under seq = next_seq (then next_seq++) inside the
 * open write transaction.  With tenant (1..FQ_TENANT_MAX bytes) the event
 * also takes that tenant's next tseq and goes into its index; NULL for an
 * event without a tenant.  The packed event's seq, tseq and shard must
 * already be set by the caller from fq_store_next_seq and
 * fq_store_next_tseq. */
int fq_store_event_append(fq_store_t *s, const char *tenant, size_t tlen, const uint8_t *ev,
                          size_t len, fq_err_t *err);
/* Visit stored events with seq > after, at most limit of them; fn returns
 * non-zero to stop, and that value is returned (negative: an error). */
typedef int (*fq_store_event_fn)(void *ud, uint64_t seq, const uint8_t *ev, size_t len);
int fq_store_event_scan(fq_store_t *s, uint64_t after, size_t limit, fq_store_event_fn fn,
                        void *ud, fq_err_t *err);
/* Visit tenant's events with tseq > after, in tseq order, at most limit;
 * fn gets the tseq as its `seq`.  Events stored before tseq existed are
 * not visited. */
int fq_store_tenant_event_scan(fq_store_t *s, const char *tenant, size_t tlen, uint64_t after,
                               size_t limit, fq_store_event_fn fn, void *ud, fq_err_t *err);

/* Encode a record as the msgpack map that `get` returns. */
int fq_cmdrec_pack(const fq_cmdrec_t *rec, fq_buf_t *out);
/* Encode a record in the compact form the store keeps (see store.c). */
int fq_cmdrec_encode(const fq_cmdrec_t *rec, fq_buf_t *out);
/* Decode a stored record, compact or the older msgpack map (fills rec;
 * params copied).  FQ_ESTORAGE on damaged bytes. */
int fq_cmdrec_unpack(const uint8_t *p, size_t n, fq_cmdrec_t *rec, fq_err_t *err);
/* The record of id as the msgpack map `get` returns, appended to out. */
int fq_store_cmd_wire(fq_store_t *s, const char *id, size_t len, fq_buf_t *out, fq_err_t *err);

/* Opaque per-(VIN, domain) session bytes for the signer. */
int fq_store_session_get(fq_store_t *s, const char *vin, int domain, fq_buf_t *out,
                         fq_err_t *err);
int fq_store_session_put(fq_store_t *s, const char *vin, int domain, const uint8_t *p, size_t n,
                         fq_err_t *err);

/* Unmap the store's pages from this process (madvise MADV_DONTNEED on
 * LMDB's read-only map; nothing is written, and the page cache keeps
 * them): called once the start-up rebuild has read every key, so that the
 * pages it walked are not held as the process's resident memory until the
 * kernel reclaims them.  Later reads fault pages in again as they need
 * them.  No transaction may be open. */
void fq_store_release_pages(fq_store_t *s);

/* Statistics for `stats` and tests. */
typedef struct fq_store_stats {
  uint64_t commands, queued, events, next_seq;
  uint64_t map_size, map_used;
} fq_store_stats_t;
int fq_store_stats(fq_store_t *s, fq_store_stats_t *st, fq_err_t *err);

/* --- room ----------------------------------------------------------------
 *
 * The map (--map-size-mb) is the most the store can hold; what is in use
 * is counted in pages of the B-trees (every database and LMDB's free list)
 * plus the two meta pages.  Pages on the free list are room: LMDB takes
 * them before it extends the file, although the ones a transaction frees
 * are reusable only two commits later (the previous snapshot must stay
 * whole), which is why the shard keeps slack under the map size. */
typedef struct fq_store_usage {
  uint64_t map_size;   /* bytes */
  uint64_t used;       /* bytes of live pages, as the open transaction sees them */
  uint64_t page;       /* page size */
} fq_store_usage_t;

/* Inside a transaction (read or write); a write transaction counts its own
 * changes.  Cheap: one lookup per database. */
int fq_store_usage(fq_store_t *s, fq_store_usage_t *u, fq_err_t *err);

/* Clear the reader slots of processes that died inside a read
 * transaction (they pin every page freed after their snapshot); returns
 * how many. */
int fq_store_reader_check(fq_store_t *s);

/* The map size in force (the one opened with, or larger when the store
 * already held more, or set since). */
uint64_t fq_store_map_size(const fq_store_t *s);

/* Grow the map to bytes.  No transaction may be open (LMDB's rule, which
 * the shard thread, the only user of its store, meets between batches). */
int fq_store_set_map_size(fq_store_t *s, uint64_t bytes, fq_err_t *err);

/* Room on the store's filesystem for an unprivileged writer, and the size
 * of its data file (with the blocks reserved ahead), in bytes. */
int fq_store_disk(const fq_store_t *s, uint64_t *avail, uint64_t *file_size, fq_err_t *err);

/* The disk's share of the reserve: allocate the data file's blocks up to
 * end bytes (at most the map size) ahead of LMDB's writes, so that writes
 * below it never meet a full disk.  0 (also on a filesystem that cannot:
 * then nothing is reserved, and fq_store_disk_end() says UINT64_MAX),
 * FQ_ESTORFULL when the disk has no such room, FQ_ESTORAGE.  Outside or
 * inside a transaction. */
int fq_store_reserve_disk(fq_store_t *s, uint64_t end, fq_err_t *err);
/* Up to where blocks are reserved (bytes), UINT64_MAX when unknown. */
uint64_t fq_store_disk_end(const fq_store_t *s);

/* --- retention (used by retention.c) --------------------------------------
 *
 * Pruning deletes old rows in a nested transaction inside the open write
 * transaction, so that a failure there (a full map) drops only the
 * pruning, never the batch around it.  Only deletions belong in it: no
 * new id, event or tseq.  begin needs an open write transaction; commit
 * folds the nested one into it (durable with the outer commit), abort
 * drops it; either way the outer transaction is current again. */
int fq_store_nest_begin(fq_store_t *s, fq_err_t *err);
int fq_store_nest_commit(fq_store_t *s, fq_err_t *err);
void fq_store_nest_abort(fq_store_t *s);

/* How long a (tenant, key) dedupes, from the acceptance of its command
 * (0, the default of a new handle: for ever).  Past it fq_store_idem_get
 * no longer finds the key, so a submit with it creates a new command.
 * Setting it drops the keys already expired from the in-memory table
 * (*dropped of them), without writing: their `idemlog` rows are left to
 * the pruning.  Outside a transaction or inside one. */
int fq_store_set_dedupe_window(fq_store_t *s, int64_t window_ms, int64_t now, size_t *dropped,
                               fq_err_t *err);
int64_t fq_store_dedupe_window(const fq_store_t *s);

/* The `created` time of command id (FQ_ENOTFOUND when it has no record). */
int fq_store_cmd_created(fq_store_t *s, const char *id, int64_t *created, fq_err_t *err);
/* Delete the record of id; FQ_ENOTFOUND when there is none. */
int fq_store_cmd_del(fq_store_t *s, const char *id, fq_err_t *err);

/* The lowest id in `idemlog` (the oldest remembered key); FQ_ENOTFOUND
 * when empty. */
int fq_store_idem_first(fq_store_t *s, char id[FQ_ID_LEN + 1], fq_err_t *err);
/* Delete the `idemlog` row of id, giving its (tenant, key) hash in *h for
 * fq_store_idem_forget() once the deletion is durable; FQ_ENOTFOUND when
 * there is no row. */
int fq_store_idem_del(fq_store_t *s, const char *id, uint64_t *h, fq_err_t *err);
/* Remove (h, command number) from the in-memory table. */
void fq_store_idem_forget(fq_store_t *s, uint64_t h, uint64_t num);
/* Whether any command is remembered under hash h; and how many pairs the
 * in-memory table holds. */
bool fq_store_idem_has(const fq_store_t *s, uint64_t h);
size_t fq_store_idem_count(const fq_store_t *s);

/* The lowest stored event (borrowed until the transaction ends, or until
 * the next write); FQ_ENOTFOUND when the log is empty. */
int fq_store_event_first(fq_store_t *s, uint64_t *seq, const uint8_t **ev, size_t *len,
                         fq_err_t *err);
/* Delete event seq and, with tenant and tseq (> 0), its `tindex` row (only
 * if that row names seq).  The tenant's counter in `tcount` stays: tseq
 * never repeats.  FQ_ENOTFOUND when seq is not stored. */
int fq_store_event_del(fq_store_t *s, uint64_t seq, const char *tenant, size_t tlen,
                       uint64_t tseq, fq_err_t *err);
/* Where retained history begins: the lowest stored seq (the next seq when
 * the log is empty), and the lowest stored tseq of tenant (its next tseq
 * when it has none stored).  Inside a transaction. */
int fq_store_first_seq(fq_store_t *s, uint64_t *first, fq_err_t *err);
int fq_store_tenant_first_tseq(fq_store_t *s, const char *tenant, size_t tlen, uint64_t *first,
                               fq_err_t *err);

/* --- cluster mode: write sets (docs/cluster.md) ----------------------------
 *
 * The owner of a shard turns capture on: from then on every write of each
 * write transaction (outer or nested) is also recorded, in the order
 * made, in ws (writeset.h: [db, op, key, val] with db the index of the
 * named databases in the order listed at the top of this file, meta = 0
 * to camp = 9).  begin(write) empties ws, abort empties it, a nested
 * transaction that is aborted (or whose commit fails) takes its entries
 * back out.  A write LMDB refuses is not recorded, and one that ws has no
 * room for is not made (FQ_ETOOLARGE past ws's cap: the caller cuts the
 * batch, aborts, and retries with fewer).  NULL turns it off: the default,
 * and single-node mode, whose writes cost one pointer test more and are
 * otherwise what they were.  The store does not own ws.  No transaction may
 * be open.
 *
 * A batch of the owner:
 *   begin(write); ... writes ...; prepare(s, L + 1);
 *   encode ws; append it to the log expecting last sequence L;
 *   commit (or abort when the append failed).
 * prepare writes what commit would add on its own (the `next_cmd` and
 * `next_q` counters it moved, the `tcount` row of each tenant given
 * events) and meta "applied" = seq, so the write set is complete; commit
 * then writes nothing more.  No write may follow prepare (with capture on
 * it is refused with FQ_EINTERNAL).  seq must be applied + 1:
 * FQ_STORE_EREPEAT / FQ_STORE_EHOLE otherwise (the store is not at the
 * log's end: catch up first).  Without prepare, commit writes exactly what
 * it always did, and no "applied". */
struct fq_ws;
int fq_store_capture(fq_store_t *s, struct fq_ws *ws, fq_err_t *err);
int fq_store_prepare(fq_store_t *s, uint64_t seq, fq_err_t *err);

/* Outcomes of apply (and prepare) that a follower must tell apart; kept
 * out of FQ_ERRORS like cluster.h's.  Each comes with its text in err. */
enum {
  FQ_STORE_EREPEAT = -20101, /* seq <= applied: this entry is in the store already */
  FQ_STORE_EHOLE = -20102,   /* seq > applied + 1: entries are missing before it */
  FQ_STORE_ESHARD = -20103,  /* an entry of another shard's log */
};

/* The log sequence of the last entry this store took (meta "applied":
 * prepared and committed by the owner, or applied); 0 for none.  Inside
 * a transaction (which sees its own prepare) or outside one. */
int fq_store_applied(fq_store_t *s, uint64_t *applied, fq_err_t *err);

/* Apply log entry seq, msg[len] (untrusted bytes: a write set, or the
 * empty genesis entry, which only seq 1 may be), on a follower's store
 * (no transaction open, capture off): every operation in order, and meta
 * "applied" = seq, in one write transaction, committed (fsync) before this
 * returns.  Nothing is written when it fails:
 *   FQ_EPROTO         malformed message (fq_ws_decode's text), a db index
 *                     past camp, or an entry prepared as another seq;
 *   FQ_STORE_ESHARD   another shard's entry;
 *   FQ_STORE_EREPEAT  seq <= applied (never applied twice);
 *   FQ_STORE_EHOLE    seq > applied + 1 (never skipped);
 *   FQ_ESTORAGE       a delete of a key this copy does not hold (the copy
 *                     is not the log's), or LMDB's error;
 *   FQ_ESTORFULL, -ENOMEM.
 * The counters kept in memory (next id, queue position, event seq, each
 * tenant's tseq, the dedupe table) follow the applied rows, so the store
 * reads as if it had been reopened; the owner's takeover still reopens it
 * (docs/cluster.md) to rebuild what the shard keeps beside the store. */
int fq_store_apply(fq_store_t *s, const uint8_t *msg, size_t len, uint64_t seq, fq_err_t *err);

/* --- the data directory --------------------------------------------------
 *
 * A fleetqd data directory holds one store per shard (shard-<i>/), the
 * account store, and two files that belong to the directory as a whole:
 *   LOCK    flock(2)ed exclusively by the one daemon using the directory:
 *           LMDB alone would let two processes interleave their writes to
 *           the same queues.  The lock lives as long as the handle below
 *           (the file itself stays; it carries no data).
 *   SHARDS  the shard count, in decimal, written on first use.  A device's
 *           commands live in the shard its key hashes to, so reopening
 *           with another count would split queues and dedupe: it is part
 *           of the data and is refused when it differs. */
typedef struct fq_store_datadir fq_store_datadir_t;

/* Claim data directory dir for a daemon with `shards` shards (> 0):
 * create dir (0700) when missing, take the LOCK without waiting, then
 * check SHARDS against shards, or write it (atomically: a temporary file,
 * fsync, rename) when the directory is new.  On success *out is a handle
 * that holds the lock until fq_store_close_datadir(); the lock is not
 * inherited by child processes.
 * Returns 0, or with *out NULL and the reason in err:
 *   FQ_EBUSY     another process holds the lock ("in use by another
 *                fleetqd");
 *   FQ_ECONFIG   SHARDS holds another count (the message names the count
 *                to start with) or is not a count; or dir is too long;
 *   FQ_ESTORAGE  the directory or a file cannot be created, read, written.
 * Caller's thread; call before starting threads that use the directory. */
int fq_store_open_datadir(const char *dir, unsigned shards, fq_store_datadir_t **out,
                          fq_err_t *err);

/* Release the lock and free the handle.  Accepts NULL; NULLs *dp. */
void fq_store_close_datadir(fq_store_datadir_t **dp);

#endif
