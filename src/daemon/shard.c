/*
 * The shard thread: group commit of everything that arrived, then replies
 * and events.  Each loop iteration drains up to batch_max requests from the
 * ingress socket, applies them all inside one LMDB write transaction,
 * commits (fsync), and only then sends the replies and publishes the
 * events it produced.  Deadlines are enforced from the store's deadline
 * index between batches.
 */
#include "shard.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "fleetq/commands.h"
#include "budget.h"
#include "clnode.h"
#include "replica.h"
#include "writeset.h"
#include "devq.h"
#include "hmap.h"
#include "fleetq/wire.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "mpread.h"
#include "retention.h"
#include "store.h"
#include "util.h"
#include "zmsg.h"

/* Envelope of a request as the ingress passes it on: the client's routing
 * id and its envelope frames (FQ_WIRE_MAX_ENVELOPE, the one limit the
 * ingress, the shards and the auth thread share).  A request is its kind
 * frame, a lookup's token, that envelope and the body: at most
 * MAX_FRAMES + 2 frames. */
#define MAX_ENV (1 + FQ_WIRE_MAX_ENVELOPE)
#define MAX_FRAMES (MAX_ENV + 1)
/* Replies and events one batch may produce before the requests left in it
 * wait for the next batch: 8000 `get`s of a command with 16 KiB of params
 * made a 125 MB batch, past the buffers' 64 MiB cap, and the daemon
 * stopped.  It is also the burst one shard sends a client at once, which
 * the per-client reply limit (--client-reply-kb, at least 8 MiB) must
 * absorb while a client that reads takes it; and what a batch's buffers
 * keep between batches.  A batch of 4096 submits makes about 1.3 MB. */
#define BATCH_OUT_MAX (2u << 20)
/* Cluster mode: a batch is cut once its write set passes WS_CUT, so that it
 * stays one log message (cluster.h: at most 8 MiB); the write set's own
 * cap (WS_CAP) leaves room for the submit being handled at the cut. */
#define WS_CUT (6u << 20)
#define STANDBY_POLL_MS 20
#define WS_CAP ((8u << 20) - 8192)
/* Poll items of one loop turn: the ingress socket plus the dispatcher's. */
#define MAX_ITEMS 1025

/* One reply waiting for the commit. */
typedef struct pending {
  char kind;                /* 'R' or 'F' */
  uint8_t token[8];
  uint8_t found;
  int nenv;
  zmq_msg_t env[MAX_ENV];
  size_t off, len;          /* slice of sh->replies */
  /* The request, borrowed from its message for the batch: a batch whose
   * transaction fails is applied again, in a more careful way. */
  int msg;                  /* its message's index in the batch */
  int env_at;               /* where its envelope was in that message */
  bool over;                /* more envelope frames than MAX_ENV: refused */
  const char *kframe;       /* the kind frame (kind, then the tenant list) */
  size_t klen;
  const uint8_t *body;
  size_t blen;
  int sub;                  /* a submit's result for the metrics (SUB_NONE: not one) */
  int64_t rcvd_ns;          /* when the shard received it (monotonic), for the ack time */
} pending_t;

#define SUB_NONE INT32_MIN

/* How one attempt at a batch may change the store (see process_batch). */
typedef struct pass {
  bool submits;             /* new commands may be stored */
  bool writes;              /* a write transaction; else read only */
  bool dispatch;            /* the dispatcher steps, drains, and deadlines are enforced */
} pass_t;

/* One event waiting for the commit. */
typedef struct pevent {
  size_t topic_off, topic_len, off, len; /* slices of sh->evbuf */
  int state;                /* the command's new state, and its age (ms) then: */
  int64_t age_ms;           /* counted in the metrics once committed */
} pevent_t;

struct fq_shard {
  fq_shard_opts_t o;
  char endpoint[64];
  char dir[4096];
  fq_store_t *store;
  fq_retention_t *ret;       /* pruning of old commands, events and keys */
  uint64_t received;         /* 'Q' and 'F' messages received (see announce_gone) */
  fq_devq_t *q;
  fq_dispatch_t *disp;
  void *sock;
  pthread_t thread;
  bool started;

  pending_t *pend;
  size_t npend, apend;
  fq_buf_t replies;
  pevent_t *pev;
  size_t npev, apev;
  fq_buf_t evbuf;
  fq_buf_t scratch;
  fq_buf_t wire;             /* a record in its `get` form, for a reply */
  int64_t next_deadline;     /* earliest deadline in the index, or INT64_MAX */
  int64_t next_sched;        /* earliest not_before of a scheduled command, or INT64_MAX */
  size_t nsched;             /* scheduled commands (not in the device queues) */
  bool stopping;
  int64_t drain_until;       /* 'T' received: stop once drained or at this time; 0 = serving */
  /* Room (see "storage full" below). */
  uint64_t limit;            /* the high-water mark of the map, bytes */
  uint64_t used_est;         /* bytes in use, as measured and estimated in this pass */
  int64_t nosubmit_until;    /* a commit with new commands failed: none stored until then */
  int64_t readonly_until;    /* nothing could be written: read only until then */
  int64_t disp_retry_at;     /* the dispatcher's changes could not be written: next try */
  int64_t prune_retry_at;    /* pruning alone could not be written: next try (prune_alone) */
  int64_t disp_backoff;
  int64_t grow_next;         /* the next look at growing the map */
  int64_t disk_probe_at;     /* the disk had no room: ask again then */
  bool want_grow;            /* usage crossed the growth mark in the last batch */
  bool full;                 /* submits are being refused (logged once per episode) */
  bool recover_pending;      /* the start-up settlement could not be written yet */
  char full_why[200];        /* why, for replies and the log */
  /* The loop's buffers, allocated by fq_shard_new so that the thread has
   * nothing left to fail on before it serves. */
  zmq_msg_t (*msgs)[MAX_FRAMES + 2]; /* one received request per slot, batch_max slots */
  int *counts;                       /* frames of each slot */
  int64_t *rcvd;                     /* when each slot was received (fq_mono_ns) */
  zmq_pollitem_t *items;             /* MAX_ITEMS */
  struct keys_ctx *keys;             /* announce_keys() */
  /* Accounts found in the account store since its generation last moved
   * (acct_known): names only, so at most one entry per stored account. */
  fq_hmap_t accts;
  uint64_t accts_gen;
  /* One log line per command that ends failed / unknown / expired, once
   * its transaction committed (see endlog_add). */
  struct endline *endl;      /* ENDLOG_BATCH entries */
  size_t nendl;
  uint64_t endl_over;        /* ends of this transaction past ENDLOG_BATCH */
  int64_t endl_win;          /* start of the current one-second window */
  unsigned endl_n;           /* lines written in it */
  uint64_t endl_supp;        /* lines held back since the last "suppressed" line */
  /* Health (shard.h 'H'): the last commit that changed a command. */
  int64_t last_change_ms;
  bool changed;              /* this transaction changed a command */
  /* FQ_TRACE=1: where the shard thread's time goes (thread CPU ns). */
  bool trace;
  int64_t tr_proc, tr_commit, tr_flush, tr_launch, tr_poll, tr_recv, tr_loops, tr_batches;
  uint64_t tr_msgs;
  /* The last commit's start and wall time (fq_mono_ns), for the batch
   * metrics (fq_metrics_batch): always on, two clock reads a batch. */
  int64_t commit_t0, commit_ns;
  /* Cluster mode (docs/cluster.md); cn NULL: a single node, none of this.
   * A shard is either the owner (its lease is held here: it serves, and
   * each batch goes into the shard's log before its local commit) or a
   * standby (it applies the log to its copy and answers requests with
   * busy: the ingress forwards them to the owner). */
  fq_clnode_t *cn;
  fq_cl_t *cl;               /* this thread's NATS connection */
  fq_replica_t rep;          /* the owner's term and commit counter */
  fq_ws_t ws;                /* the open transaction's write set (owner) */
  bool owner;
  bool lost;                 /* a commit was fenced or got no answer: step down */
  bool handing_over;         /* balance: draining, then stepping down (clnode.h) */
  bool handover_ready;       /* drained: step down at the next tick */
  fq_cl_follow_t *fol;       /* the standby's reader of the log */
  int64_t follow_retry_at;   /* after a follower error (fq_mono_ns) */
  uint64_t follow_applied;   /* log entries applied since the last metrics update */
};

#define TNOW() (sh->trace ? thread_cpu_ns() : 0)
static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

unsigned fq_shard_for_device(const char *device, size_t len, unsigned count) {
  /* FNV-1a 64: stable across versions and platforms, which matters because
   * a device's commands live in its shard's store. */
  return count ? (unsigned)(fq_hash64(device, len) % count) : 0;
}

const char *fq_shard_endpoint(const fq_shard_t *sh) { return sh->endpoint; }

/* --- batch bookkeeping ------------------------------------------------------ */

static pending_t *pend_add(fq_shard_t *sh, char kind, zmq_msg_t *env, int nenv) {
  if (sh->npend == sh->apend) {
    size_t n = sh->apend ? sh->apend * 2 : 256;
    pending_t *p = realloc(sh->pend, n * sizeof *p);
    if (!p) return NULL;
    sh->pend = p;
    sh->apend = n;
  }
  pending_t *p = &sh->pend[sh->npend++];
  p->kind = kind;
  p->found = 1;
  p->sub = SUB_NONE;
  p->nenv = nenv;
  for (int i = 0; i < nenv; i++) {
    zmq_msg_init(&p->env[i]);
    zmq_msg_move(&p->env[i], &env[i]);
  }
  p->off = sh->replies.len;
  p->len = 0;
  return p;
}

static void pend_close(fq_shard_t *sh, pending_t *p) { p->len = sh->replies.len - p->off; }

/* Queue an event for publication after the commit and append it to the
 * store's log inside the open transaction. */
static int emit_event(fq_shard_t *sh, const fq_cmdrec_t *rec, int prev, fq_err_t *err) {
  sh->changed = true; /* every event is a command stored or moved */
  fq_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.id = (fq_str_t){rec->id, strlen(rec->id)};
  ev.tenant = (fq_str_t){rec->tenant, strlen(rec->tenant)};
  ev.key = (fq_str_t){rec->key, strlen(rec->key)};
  if (rec->vin[0]) ev.vin = (fq_str_t){rec->vin, strlen(rec->vin)};
  ev.site = rec->site;
  ev.command = (fq_str_t){rec->command, strlen(rec->command)};
  ev.reason = (fq_str_t){rec->reason, strlen(rec->reason)};
  ev.state = rec->state;
  ev.prev = prev;
  ev.at = rec->updated;
  ev.attempt = rec->attempts;
  ev.error = rec->error;
  ev.http = rec->http;
  ev.fault = rec->fault;
  ev.shard = sh->o.index;
  ev.seq = fq_store_next_seq(sh->store);
  ev.tseq = fq_store_next_tseq(sh->store, ev.tenant.p, ev.tenant.n);
  if (rec->campaign[0]) ev.campaign = (fq_str_t){rec->campaign, strlen(rec->campaign)};

  if (sh->npev == sh->apev) {
    size_t n = sh->apev ? sh->apev * 2 : 256;
    pevent_t *p = realloc(sh->pev, n * sizeof *p);
    if (!p) return fq_errf(err, -ENOMEM, "out of memory");
    sh->pev = p;
    sh->apev = n;
  }
  pevent_t *pe = &sh->pev[sh->npev];
  char topic[64 + 1 + 32];
  size_t tl = fq_wire_event_topic(&ev, topic, sizeof topic);
  pe->topic_off = sh->evbuf.len;
  pe->topic_len = tl;
  int rc = fq_buf_append(&sh->evbuf, topic, tl);
  if (rc) return fq_errf(err, rc, "event buffer full");
  pe->off = sh->evbuf.len;
  if ((rc = fq_wire_event_pack(&sh->evbuf, &ev)) != 0) return fq_errf(err, rc, "event encode");
  pe->len = sh->evbuf.len - pe->off;
  pe->state = rec->state;
  pe->age_ms = rec->updated - rec->created;
  if ((rc = fq_store_event_append(sh->store, ev.tenant.p, ev.tenant.n, sh->evbuf.data + pe->off,
                                  pe->len, err)) != 0)
    return rc;
  sh->npev++;
  return 0;
}

/* --- command end lines -------------------------------------------------------
 *
 * Every command that ends failed, unknown or expired gets one log line
 * (id, tenant, device, command, state, error, reason: never a token,
 * which a command record does not hold).  The line waits for the commit:
 * a transaction that is undone and applied again would otherwise log the
 * same end twice, or an end that never happened.  Under a storm (a Fleet
 * API outage failing thousands of commands) at most ENDLOG_PER_S lines a
 * second leave each shard; the rest are counted and one "suppressed" line
 * says how many once the second is over. */
#define ENDLOG_BATCH 64
#define ENDLOG_PER_S 20

typedef struct endline {
  char id[FQ_ID_LEN + 1];
  char tenant[65];
  char device[FQ_DEVICE_MAX];
  char command[48];
  int state, error;
  char reason[256];
} endline_t;

static void endlog_add(fq_shard_t *sh, const fq_cmdrec_t *rec) {
  if (rec->state != FQ_ST_FAILED && rec->state != FQ_ST_UNKNOWN && rec->state != FQ_ST_EXPIRED)
    return;
  if (!sh->endl || sh->nendl == ENDLOG_BATCH) {
    sh->endl_over++;
    return;
  }
  endline_t *e = &sh->endl[sh->nendl++];
  snprintf(e->id, sizeof e->id, "%s", rec->id);
  snprintf(e->tenant, sizeof e->tenant, "%s", rec->tenant);
  snprintf(e->device, sizeof e->device, "%s", rec->device);
  snprintf(e->command, sizeof e->command, "%s", rec->command);
  snprintf(e->reason, sizeof e->reason, "%.255s", rec->reason);
  e->state = rec->state;
  e->error = rec->error;
}

/* A new window: say what the last one held back. */
static void endlog_tick(fq_shard_t *sh, int64_t now) {
  if (now - sh->endl_win < 1000) return;
  if (sh->endl_supp) {
    char shard[16], n[24];
    snprintf(shard, sizeof shard, "%u", sh->o.index);
    snprintf(n, sizeof n, "%" PRIu64, sh->endl_supp);
    fq_log_field_t f[] = {{"shard", shard}, {"suppressed", n}};
    fq_log_kv(FQ_LOG_WARN, "shard", f, 2,
              "suppressed %" PRIu64 " lines of commands that ended failed/unknown/expired "
              "(at most %d a second per shard)",
              sh->endl_supp, ENDLOG_PER_S);
  }
  sh->endl_win = now;
  sh->endl_n = 0;
  sh->endl_supp = 0;
}

/* After the commit: the lines of the ends it made durable. */
static void endlog_flush(fq_shard_t *sh, int64_t now) {
  endlog_tick(sh, now);
  for (size_t i = 0; i < sh->nendl; i++) {
    if (sh->endl_n >= ENDLOG_PER_S) {
      sh->endl_supp++;
      continue;
    }
    sh->endl_n++;
    const endline_t *e = &sh->endl[i];
    const char *st = fq_state_name(e->state);
    fq_log_field_t f[] = {{"id", e->id},         {"tenant", e->tenant},
                          {"device", e->device}, {"command", e->command},
                          {"state", st},         {"error", e->error ? fq_errname(e->error) : NULL},
                          {"reason", e->reason}};
    fq_log_kv(e->state == FQ_ST_UNKNOWN ? FQ_LOG_WARN : FQ_LOG_INFO, "shard", f,
              sizeof f / sizeof f[0], "command %s %s", e->id, st);
  }
  sh->endl_supp += sh->endl_over;
  sh->nendl = 0;
  sh->endl_over = 0;
}

/* Move a command to a new state: record, transition list, event, and queue
 * membership when it becomes terminal. */
static int transition_put(fq_shard_t *sh, fq_cmdrec_t *rec, int state, const char *reason,
                          int error, int64_t now, bool put, fq_err_t *err) {
  int prev = rec->state;
  rec->state = state;
  rec->updated = now;
  size_t rl = reason ? strnlen(reason, sizeof rec->reason - 1) : 0;
  if (rl) memmove(rec->reason, reason, rl);
  rec->reason[rl] = 0;
  rec->error = error;
  if (rec->ntrans < FQ_MAX_TRANSITIONS) {
    rec->trans[rec->ntrans].state = state;
    rec->trans[rec->ntrans].at = now;
    rec->ntrans++;
  } else {
    /* Keep the first and the latest transitions when the list is full. */
    memmove(&rec->trans[1], &rec->trans[2], (FQ_MAX_TRANSITIONS - 2) * sizeof rec->trans[0]);
    rec->trans[FQ_MAX_TRANSITIONS - 1].state = state;
    rec->trans[FQ_MAX_TRANSITIONS - 1].at = now;
  }
  int rc;
  if (fq_state_terminal(state)) {
    if ((rc = fq_store_active_del(sh->store, rec->id, err)) != 0) return rc;
    fq_devq_remove(sh->q, fq_store_id_num(rec->id));
  }
  if (put && (rc = fq_store_cmd_put(sh->store, rec, err)) != 0) return rc;
  if ((rc = emit_event(sh, rec, prev, err)) != 0) return rc;
  endlog_add(sh, rec);
  return 0;
}

/* A change the shard makes itself (cancel, supersede, expiry of a queued
 * command, recovery).  A command it ends may be the head its device's
 * dispatcher waits on: kick the device, so that the next command goes
 * now rather than when the ended one's deadline would have passed. */
static int transition(fq_shard_t *sh, fq_cmdrec_t *rec, int state, const char *reason, int error,
                      int64_t now, fq_err_t *err) {
  int rc = transition_put(sh, rec, state, reason, error, now, true, err);
  if (rc == 0 && sh->disp && fq_state_terminal(state)) fq_dispatch_kick(sh->disp, rec->device);
  return rc;
}

/* --- tenant restriction ------------------------------------------------------
 *
 * The kind frame of a request may carry the tenants its client may see
 * (shard.h): the ingress decides, the shard enforces it on what it reads
 * and returns.  An ACL is a run of names each followed by one \0. */

typedef struct acl {
  const char *p;
  size_t n;
} acl_t;

/* The ACL of a kind frame of len bytes (kind byte first) into *acl.
 * Returns NULL for an unrestricted request (no list, or "*" in it) and
 * acl otherwise.  A malformed list (empty name, no final \0) allows
 * nothing: failing closed is the only safe reading of a frame we did not
 * expect. */
static const acl_t *acl_parse(const char *frame, size_t len, acl_t *acl) {
  if (len <= 1) return NULL;
  acl->p = frame + 1;
  acl->n = len - 1;
  bool ok = acl->p[acl->n - 1] == 0;
  for (size_t i = 0; i < acl->n && ok;) {
    size_t l = strnlen(acl->p + i, acl->n - i);
    if (l == 0) ok = false;
    else if (l == 1 && acl->p[i] == '*') return NULL;
    i += l + 1;
  }
  if (!ok) {
    fq_error("shard", "malformed tenant list in a request's kind frame (%zu bytes): "
             "the request is treated as allowed no tenant", acl->n);
    acl->n = 0;
  }
  return acl;
}

static bool acl_allows(const acl_t *acl, const char *t, size_t tn) {
  if (!acl) return true;
  for (size_t i = 0; i < acl->n;) {
    size_t l = strnlen(acl->p + i, acl->n - i);
    if (l == tn && memcmp(acl->p + i, t, tn) == 0) return true;
    i += l + 1;
  }
  return false;
}

/* The tenant of a stored event, read without decoding the rest (it is the
 * second key of the maps we write; any order is accepted). */
static bool event_tenant(const uint8_t *ev, size_t len, fq_str_t *t) {
  fq__mp_rd_t r;
  fq__mp_obj_t m, k, v;
  fq__mp_rd_init(&r, ev, len);
  if (fq__mp_next(&r, &m, NULL) || m.kind != FQ__MP_MAP) return false;
  for (uint32_t i = 0; i < m.v.count; i++) {
    if (fq__mp_next(&r, &k, NULL)) return false;
    if (k.kind == FQ__MP_STR && k.len == 6 && memcmp(k.p, "tenant", 6) == 0) {
      if (fq__mp_next(&r, &v, NULL) || v.kind != FQ__MP_STR) return false;
      t->p = (const char *)v.p;
      t->n = v.len;
      return true;
    }
    if (fq__mp_skip(&r, 2, FQ_WIRE_MAX_DEPTH, NULL)) return false;
  }
  return false;
}

/* --- storage full -----------------------------------------------------------
 *
 * A full store must never stop the shard, and the commands it accepted
 * must still reach their end.  So new commands are refused (storage_full)
 * at a high-water mark of the map, HWM_PCT of it, minus a reserve for the
 * rest of the life of every command not yet terminal (its state changes
 * and events: RESERVE_PER_CMD each).  What stays above the mark is slack
 * for what LMDB needs besides live data: the copies a transaction writes
 * before it frees the old pages, which become reusable only two commits
 * later.
 *
 * In use is counted in live pages (fq_store_usage), at the start of each
 * attempt at a batch and again for each submit once the estimate (each
 * new command SUBMIT_COST, an upper bound) comes near the mark.  Past
 * GROW_PCT of the map the shard grows it, between batches, up to
 * --max-store-mb and only as far as the disk has room.
 *
 * The figures (docs/operations.md, "Full storage"): a command with a
 * 120-byte key takes 1.0 KB stored and queued, 1.3 KB more by the time it
 * succeeded (three events, the record rewritten); with a short key 0.6 and
 * 0.8 KB.  RESERVE_PER_CMD covers the longest keys with some margin.
 *
 * The disk must hold what the map promises: the data file's blocks are
 * allocated ahead (fq_store_reserve_disk) up to the live data, the
 * reserve and the slack (at most DISK_SLACK_MAX), and a new command needs
 * that room too, else storage_full ("disk full").  The disk is asked again
 * PROBE_MS later, so room that comes back is used without a restart. */
#define HWM_PCT 90
#define GROW_PCT 80
#define SUBMIT_COST 2048
#define RESERVE_PER_CMD 1536
#define PROBE_MS 1000

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

/* The pass's starting point: bytes in use and the mark, inside its
 * transaction. */
static int measure(fq_shard_t *sh, fq_err_t *err) {
  fq_store_usage_t u;
  int rc = fq_store_usage(sh->store, &u, err);
  if (rc) return rc;
  sh->used_est = u.used;
  fq_metrics_shard_store(sh->o.index, u.used, u.map_size);
  sh->limit = u.map_size / 100 * HWM_PCT;
  uint64_t reserve = (uint64_t)(fq_devq_count(sh->q) + sh->nsched) * RESERVE_PER_CMD;
  if (u.used + reserve >= u.map_size / 100 * GROW_PCT && fq_store_map_size(sh->store) < sh->o.max_store)
    sh->want_grow = true;
  return 0;
}

/* Room the disk keeps beyond the map's reserve for LMDB's copies (see
 * HWM_PCT), at most DISK_SLACK_MAX: the 90 % mark of a 16 GiB map leaves
 * 1.6 GiB, which the disk need not hold for a few transactions' copies. */
#define DISK_SLACK_MAX ((uint64_t)8 << 20)

static void refusing(fq_shard_t *sh) {
  if (sh->full) return;
  sh->full = true;
  fq_warn("shard", "%s: new commands get storage_full (--max-store-mb %.0f)", sh->full_why,
          mib(sh->o.max_store));
}

/* The disk's share: the data file's blocks allocated ahead up to end
 * (fq_store_reserve_disk), so that what the map's reserve promises is on
 * the disk too.  0 or FQ_ESTORFULL (sh->full_why says why); after a
 * refusal the disk is asked again only PROBE_MS later. */
static int disk_room(fq_shard_t *sh, uint64_t end) {
  int64_t now = fq_now_ms();
  if (now < sh->disk_probe_at) return FQ_ESTORFULL;
  /* Ahead by a chunk, so that the disk is asked once per chunk of new
   * commands, not for each. */
  uint64_t map = fq_store_map_size(sh->store), chunk = map / 32;
  if (chunk < ((uint64_t)1 << 20)) chunk = (uint64_t)1 << 20;
  if (chunk > DISK_SLACK_MAX) chunk = DISK_SLACK_MAX;
  fq_err_t e;
  int rc = fq_store_reserve_disk(sh->store, end + chunk, &e);
  if (rc == FQ_ESTORFULL) rc = fq_store_reserve_disk(sh->store, end, &e);
  if (rc == FQ_ESTORFULL) {
    sh->disk_probe_at = now + PROBE_MS;
    snprintf(sh->full_why, sizeof sh->full_why, "%.190s", e.msg);
    refusing(sh);
    return FQ_ESTORFULL;
  }
  /* Anything else: the commit will tell (and a failed commit is handled). */
  if (rc) fq_warn("shard", "shard %u: %s", sh->o.index, e.msg);
  return 0;
}

static uint64_t disk_slack(const fq_shard_t *sh) {
  uint64_t x = fq_store_map_size(sh->store) / 100 * (100 - HWM_PCT);
  return x > DISK_SLACK_MAX ? DISK_SLACK_MAX : x;
}

/* May one more command be stored?  0, FQ_ESTORFULL (sh->full_why says
 * why), or a storage error. */
static int admit(fq_shard_t *sh, fq_err_t *err) {
  uint64_t reserve = (uint64_t)(fq_devq_count(sh->q) + sh->nsched + 1) * RESERVE_PER_CMD;
  if (sh->used_est + SUBMIT_COST + reserve > sh->limit) {
    /* The estimate is from above: measure before refusing. */
    fq_store_usage_t u;
    int rc = fq_store_usage(sh->store, &u, err);
    if (rc) return rc;
    sh->used_est = u.used;
    if (u.used + SUBMIT_COST + reserve > sh->limit) {
      snprintf(sh->full_why, sizeof sh->full_why,
               "shard %u's store is at its high-water mark: %.1f MiB of %.1f MiB in use, "
               "%.1f MiB kept for the %zu commands not yet finished",
               sh->o.index, mib(u.used), mib(u.map_size), mib(reserve - RESERVE_PER_CMD),
               fq_devq_count(sh->q) + sh->nsched);
      if (fq_store_map_size(sh->store) < sh->o.max_store) sh->want_grow = true;
      refusing(sh);
      return FQ_ESTORFULL;
    }
  }
  uint64_t end = sh->used_est + SUBMIT_COST + reserve + disk_slack(sh);
  if (end > fq_store_disk_end(sh->store) && disk_room(sh, end) != 0) return FQ_ESTORFULL;
  sh->used_est += SUBMIT_COST;
  if (sh->full) {
    sh->full = false;
    fq_info("shard", "shard %u: room again (%.1f MiB of %.1f MiB in use): storing new commands",
            sh->o.index, mib(sh->used_est), mib(fq_store_map_size(sh->store)));
  }
  return 0;
}

/* A transaction of the batch failed: say why in the replies that follow
 * and, once per episode, in the log. */
static void storage_trouble(fq_shard_t *sh, const fq_err_t *err) {
  snprintf(sh->full_why, sizeof sh->full_why, "shard %u cannot write to its store: %.150s",
           sh->o.index, err->msg);
  /* A reader that died with its transaction open (another process: a
   * backup, mdb_stat killed) keeps every page freed since from being
   * reused: clear such slots, LMDB does not by itself. */
  int dead = fq_store_reader_check(sh->store);
  if (dead) fq_warn("shard", "shard %u: cleared %d stale reader slot(s)", sh->o.index, dead);
  if (!sh->full) {
    sh->full = true;
    fq_warn("shard", "%s: new commands get storage_full; trying again every %d ms",
            sh->full_why, PROBE_MS);
  }
}

/* Between batches (no transaction open): give the map room, up to
 * --max-store-mb, doubling it, but never past what the disk can hold. */
static void grow_map(fq_shard_t *sh, int64_t now) {
  if (!sh->want_grow || now < sh->grow_next) return;
  sh->want_grow = false;
  sh->grow_next = now + PROBE_MS; /* after a refusal: look again in a while */
  uint64_t cur = fq_store_map_size(sh->store), want = cur * 2, avail, file;
  if (cur >= sh->o.max_store) return;
  if (want > sh->o.max_store) want = sh->o.max_store;
  fq_err_t err;
  if (fq_store_disk(sh->store, &avail, &file, &err) != 0) {
    fq_warn("shard", "shard %u: cannot grow the map: %s", sh->o.index, err.msg);
    return;
  }
  /* The file grows up to the map as it fills: the disk must have that
   * room, for this shard at least. */
  uint64_t fits = file + avail, step = (uint64_t)1 << 20;
  if (want > fits) want = fits / step * step;
  if (want < cur + cur / 8) {
    fq_warn("shard", "shard %u: the map (%.1f MiB) cannot grow: the disk has %.1f MiB free",
            sh->o.index, mib(cur), mib(avail));
    return;
  }
  if (fq_store_set_map_size(sh->store, want, &err) != 0) /* the environment is unusable */
    fq_fatal("shard %u: cannot grow the map to %.1f MiB: %s", sh->o.index, mib(want), err.msg);
  fq_info("shard", "shard %u: map grown from %.1f MiB to %.1f MiB (--max-store-mb %.0f)",
          sh->o.index, mib(cur), mib(want), mib(sh->o.max_store));
  sh->grow_next = 0;
}

/* --- request handlers ------------------------------------------------------ */

static void reply_error(fq_shard_t *sh, pending_t *p, int code, const char *msg,
                        const fq_request_t *req) {
  fq_wire_reply_error(&sh->replies, code, msg, req ? req->req_raw : NULL,
                      req ? req->req_raw_len : 0);
  if (req && req->op == FQ_OP_SUBMIT) p->sub = code;
  pend_close(sh, p);
}

static int reply_record(fq_shard_t *sh, pending_t *p, const char *id, const fq_request_t *req,
                        fq_err_t *err) {
  fq_buf_reset(&sh->wire);
  int rc = fq_store_cmd_wire(sh->store, id, strlen(id), &sh->wire, err);
  if (rc) return rc;
  fq_wire_reply_command(&sh->replies, sh->wire.data, sh->wire.len, req->req_raw, req->req_raw_len);
  pend_close(sh, p);
  return 0;
}

/* Hold a new command (rec: stored in `idemlog`, not yet anywhere else,
 * rec->not_before ahead of now) until its time: `sched`, state
 * `scheduled`, in no device queue, so that it holds back nothing
 * submitted after it; its deadline counts from its time.  Never coalesced
 * (see release_due).  Inside the batch's write transaction; any command
 * the shard creates with a time (a campaign's device commands) goes
 * through here. */
static int schedule(fq_shard_t *sh, fq_cmdrec_t *rec, int64_t now, fq_err_t *err) {
  rec->deadline = rec->not_before + rec->ttl_ms;
  int rc = fq_store_sched_put(sh->store, rec, err);
  if (rc == 0) rc = transition(sh, rec, FQ_ST_SCHEDULED, "", 0, now, err);
  if (rc) return rc;
  sh->nsched++;
  if (rec->not_before < sh->next_sched) sh->next_sched = rec->not_before;
  return 0;
}

/* Supersede older still-queued commands of the same name on the device,
 * of the same tenant and account only: a device may be shared by tenants
 * (and reached through several accounts), and one tenant's set-point must
 * never replace another's command, which that tenant would see end
 * `superseded` by a command it cannot even look up. */
static int do_coalesce(fq_shard_t *sh, const fq_cmdrec_t *rec, int64_t now, fq_err_t *err) {
  uint64_t nums[64];
  size_t n = fq_devq_list(sh->q, rec->device, nums, 64);
  if (n > 64) n = 64;
  uint64_t self = fq_store_id_num(rec->id);
  for (size_t i = 0; i < n; i++) {
    if (nums[i] == self) continue;
    char id[FQ_ID_LEN + 1];
    fq_store_id_format(sh->o.index, nums[i], id);
    fq_cmdrec_t old;
    int rc = fq_store_cmd_get(sh->store, id, FQ_ID_LEN, &old, err);
    if (rc) return rc;
    if (old.state == FQ_ST_QUEUED && strcmp(old.command, rec->command) == 0 &&
        strcmp(old.tenant, rec->tenant) == 0 && strcmp(old.account, rec->account) == 0) {
      char reason[96];
      snprintf(reason, sizeof reason, "superseded by newer command %s", rec->id);
      rc = transition(sh, &old, FQ_ST_SUPERSEDED, reason, 0, now, err);
    }
    fq_cmdrec_free(&old);
    if (rc) return rc;
  }
  return 0;
}

/* --- accounts ------------------------------------------------------------ */

typedef struct acct_name {
  char id[FQ_ACCOUNT_ID_MAX + 1];
} acct_name_t;

typedef struct acct_key {
  const char *p;
  size_t n;
} acct_key_t;

static bool acct_name_eq(const void *item, const void *key) {
  const acct_name_t *a = item;
  const acct_key_t *k = key;
  return strlen(a->id) == k->n && memcmp(a->id, k->p, k->n) == 0;
}

/* Whether the account a submit names exists: 0, FQ_EUNKACCT, or
 * FQ_ESTORAGE (the account store could not be read).  Names found are
 * remembered until the auth side's generation moves (every add, remove
 * and token write), so the common case is a hash lookup; a name not found
 * is looked up again on every submit (one read of the account store, no
 * decryption), which is what lets an account added a moment ago be seen
 * at once, and keeps the table bounded by the accounts that exist. */
static int acct_known(fq_shard_t *sh, const fq_str_t *name, fq_err_t *err) {
  if (!sh->o.accounts) return 0;
  uint64_t gen = fq_auth_generation(sh->o.auth);
  if (gen != sh->accts_gen) {
    fq_hmap_clear(&sh->accts);
    sh->accts_gen = gen;
  }
  acct_key_t k = {name->p, name->n};
  uint64_t h = fq_hash64(name->p, name->n);
  if (fq_hmap_find(&sh->accts, h, acct_name_eq, &k)) return 0;
  int rc = fq_accounts_exists(sh->o.accounts, name->p, name->n, err);
  if (rc == FQ_ENOTFOUND) return FQ_EUNKACCT;
  if (rc) return rc;
  /* Without an auth side the generation never moves: nothing is kept. */
  acct_name_t *a = sh->o.auth ? fq_hmap_add(&sh->accts, h) : NULL;
  if (a) memcpy(a->id, name->p, name->n); /* n <= FQ_ACCOUNT_ID_MAX: checked by the store */
  return 0;
}

/* A submit arriving as a lookup ('F') is a dedupe check for a key whose
 * first use was recorded on this shard while the device hashes elsewhere:
 * answer dup / mismatch if the key is here, not_found otherwise (the
 * ingress then sends the submit to the device's shard).  Never stores. */
static int handle_submit(fq_shard_t *sh, pending_t *p, const fq_request_t *req, int64_t now,
                         bool check_only, const acl_t *acl, const pass_t *ps,
                         const char *campaign, fq_err_t *err) {
  uint8_t hash[32], old_hash[32];
  char old_id[FQ_ID_LEN + 1];
  if (!acl_allows(acl, req->tenant.p, req->tenant.n)) {
    /* The ingress refuses this first; a second line of defence. */
    char msg[160];
    snprintf(msg, sizeof msg, "this client may not submit for tenant \"%.*s\"",
             (int)req->tenant.n, req->tenant.p);
    reply_error(sh, p, FQ_EFORBIDDEN, msg, req);
    return 0;
  }
  fq_wire_request_hash(req, hash);
  int rc = fq_store_idem_get(sh->store, req->tenant.p, req->tenant.n, req->key.p, req->key.n,
                             old_hash, old_id, err);
  if (rc == 0) {
    if (memcmp(hash, old_hash, 32) != 0) {
      char msg[200];
      snprintf(msg, sizeof msg,
               "key \"%.*s\" was already used by tenant \"%.*s\" for a different request "
               "(command %s)",
               (int)(req->key.n > 128 ? 128 : req->key.n), req->key.p, (int)req->tenant.n,
               req->tenant.p, old_id);
      reply_error(sh, p, FQ_EIDEMMISMATCH, msg, req);
      return 0;
    }
    fq_cmdrec_t old;
    if ((rc = fq_store_cmd_get(sh->store, old_id, FQ_ID_LEN, &old, err)) != 0) return rc;
    fq_wire_reply_submit(&sh->replies, old.id, old.state, true, req->req_raw, req->req_raw_len);
    p->sub = FQ_METRICS_DUPLICATE;
    pend_close(sh, p);
    fq_cmdrec_free(&old);
    return 0;
  }
  if (rc != FQ_ENOTFOUND) return rc;
  if (check_only) {
    p->found = 0;
    reply_error(sh, p, FQ_ENOTFOUND, "key not on this shard", req);
    return 0;
  }
  /* After the dedupe check: a retry of a command accepted earlier gets its
   * original even when the daemon's clock moved. */
  if (req->not_before > now + FQ_WIRE_MAX_SCHEDULE_MS) {
    char msg[200];
    snprintf(msg, sizeof msg,
             "\"not_before\": %" PRId64 " is %" PRId64 " s ahead of fleetqd's clock (%" PRId64
             "); at most %lld days ahead",
             req->not_before, (req->not_before - now) / 1000, now,
             FQ_WIRE_MAX_SCHEDULE_MS / 86400000);
    reply_error(sh, p, FQ_EBADPARAM, msg, req);
    return 0;
  }
  /* A new command for an account fleetqd does not have would wait in its
   * device's queue, holding back every later command for that device,
   * until its deadline: refuse it now instead, storing nothing.  After the
   * dedupe check, so a retry of a command accepted earlier still gets its
   * original. */
  fq_err_t aerr;
  fq_err_clear(&aerr);
  if ((rc = acct_known(sh, &req->account, &aerr)) != 0) {
    char msg[320], q[176];
    fq__mp_quote((const uint8_t *)req->account.p, req->account.n, q, sizeof q);
    if (rc == FQ_EUNKACCT)
      snprintf(msg, sizeof msg,
               "account \"%s\" is not registered with fleetqd: add it with `fleetq account "
               "add`, then submit again; nothing was stored",
               q);
    else
      snprintf(msg, sizeof msg, "cannot read the account store, nothing was stored: %.150s",
               aerr.msg);
    if (rc != FQ_EUNKACCT) fq_error("shard", "shard %u: %s", sh->o.index, msg);
    reply_error(sh, p, rc == FQ_EUNKACCT ? FQ_EUNKACCT : FQ_EINTERNAL, msg, req);
    return 0;
  }
  /* Over its daily budget, a tenant's new commands are refused; after the
   * dedupe check, so a retry of a command accepted earlier still gets its
   * original, and commands already accepted go on.  A campaign's device
   * commands were checked as a whole when the campaign was accepted. */
  if (!campaign) {
    char msg[320];
    int64_t reset_at = 0;
    if (fq_budget_check(req->tenant.p, req->tenant.n, now, &reset_at, msg, sizeof msg)) {
      fq_wire_reply_budget(&sh->replies, msg, reset_at, req->req_raw, req->req_raw_len);
      p->sub = FQ_EBUDGET;
      pend_close(sh, p);
      return 0;
    }
  }
  if (!ps->submits || (rc = admit(sh, err)) == FQ_ESTORFULL) {
    char msg[320];
    snprintf(msg, sizeof msg, "storage full: the command was not stored (%s); submit it again "
             "later with the same key", sh->full_why);
    reply_error(sh, p, FQ_ESTORFULL, msg, req);
    return 0;
  }
  if (rc) return rc;

  fq_cmdrec_t rec;
  memset(&rec, 0, sizeof rec);
  fq_store_new_id(sh->store, rec.id, &rec.qseq);
  memcpy(rec.tenant, req->tenant.p, req->tenant.n);
  memcpy(rec.key, req->key.p, req->key.n);
  memcpy(rec.account, req->account.p, req->account.n);
  if (req->vin.p) memcpy(rec.vin, req->vin.p, req->vin.n);
  rec.site = req->site;
  fq_wire_device_key(req, rec.device, sizeof rec.device);
  snprintf(rec.command, sizeof rec.command, "%s", req->cmd->name);
  rec.params = (uint8_t *)req->params_raw; /* borrowed: not freed below */
  rec.params_len = req->params_raw_len;
  memcpy(rec.hash, hash, 32);
  rec.ttl_ms = req->ttl_ms ? req->ttl_ms : sh->o.default_ttl_ms;
  rec.created = now;
  rec.deadline = now + rec.ttl_ms;
  rec.coalesce = req->coalesce;
  rec.no_wake = req->no_wake;
  rec.not_before = req->not_before;
  rec.fault = -1;
  rec.state = -1;
  if (campaign) {
    snprintf(rec.campaign, sizeof rec.campaign, "%s", campaign);
    if ((rc = fq_store_camp_put(sh->store, campaign, rec.id, err)) != 0) return rc;
  }
  if ((rc = fq_store_idem_put(sh->store, &rec, err)) != 0) return rc;
  if (req->not_before > now) {
    if ((rc = schedule(sh, &rec, now, err)) != 0) return rc;
    fq_wire_reply_submit(&sh->replies, rec.id, FQ_ST_SCHEDULED, false, req->req_raw,
                         req->req_raw_len);
    p->sub = FQ_METRICS_ACCEPTED;
    pend_close(sh, p);
    return 0;
  }
  if ((rc = fq_store_active_put(sh->store, &rec, err)) != 0) return rc;
  if (fq_devq_push(sh->q, rec.device, fq_store_id_num(rec.id), rec.deadline) != 0)
    return fq_errf(err, -ENOMEM, "out of memory for the device queues");
  if ((rc = transition(sh, &rec, FQ_ST_QUEUED, "", 0, now, err)) != 0) return rc;
  if (rec.coalesce && (rc = do_coalesce(sh, &rec, now, err)) != 0) return rc;
  if (rec.deadline < sh->next_deadline) sh->next_deadline = rec.deadline;
  if (sh->disp) fq_dispatch_kick(sh->disp, rec.device);
  fq_wire_reply_submit(&sh->replies, rec.id, FQ_ST_QUEUED, false, req->req_raw,
                       req->req_raw_len);
  p->sub = FQ_METRICS_ACCEPTED;
  pend_close(sh, p);
  return 0;
}

/* Resolve the id a get/cancel names; FQ_ENOTFOUND when there is none here,
 * or when the command belongs to a tenant outside acl: to such a client
 * another tenant's command does not exist (the same answer, word for word,
 * as for an id never given out). */
static int resolve_id(fq_shard_t *sh, const fq_request_t *req, const acl_t *acl,
                      char id[FQ_ID_LEN + 1], fq_err_t *err) {
  int rc;
  if (req->id.p) {
    if (req->id.n != FQ_ID_LEN) return FQ_ENOTFOUND;
    memcpy(id, req->id.p, FQ_ID_LEN);
    id[FQ_ID_LEN] = 0;
    const uint8_t *raw;
    size_t n;
    if ((rc = fq_store_cmd_raw(sh->store, id, FQ_ID_LEN, &raw, &n, err)) != 0 || !acl) return rc;
    fq_cmdrec_t rec;
    if ((rc = fq_cmdrec_unpack(raw, n, &rec, err)) != 0) return rc;
    bool allowed = acl_allows(acl, rec.tenant, strlen(rec.tenant));
    fq_cmdrec_free(&rec);
    return allowed ? 0 : FQ_ENOTFOUND;
  }
  if (!acl_allows(acl, req->tenant.p, req->tenant.n)) return FQ_ENOTFOUND;
  uint8_t hash[32];
  return fq_store_idem_get(sh->store, req->tenant.p, req->tenant.n, req->key.p, req->key.n, hash,
                           id, err);
}

static void not_found(fq_shard_t *sh, pending_t *p, const fq_request_t *req) {
  char msg[256];
  if (req->id.p)
    snprintf(msg, sizeof msg, "no command with id \"%.*s\"",
             (int)(req->id.n > 64 ? 64 : req->id.n), req->id.p);
  else
    snprintf(msg, sizeof msg, "no command with tenant \"%.*s\" and key \"%.*s\"",
             (int)req->tenant.n, req->tenant.p, (int)(req->key.n > 128 ? 128 : req->key.n),
             req->key.p);
  p->found = 0;
  reply_error(sh, p, FQ_ENOTFOUND, msg, req);
}

static int handle_get(fq_shard_t *sh, pending_t *p, const fq_request_t *req, const acl_t *acl,
                      fq_err_t *err) {
  char id[FQ_ID_LEN + 1];
  int rc = resolve_id(sh, req, acl, id, err);
  if (rc == FQ_ENOTFOUND) {
    not_found(sh, p, req);
    return 0;
  }
  if (rc) return rc;
  return reply_record(sh, p, id, req, err);
}

static int handle_cancel(fq_shard_t *sh, pending_t *p, const fq_request_t *req, int64_t now,
                         const acl_t *acl, const pass_t *ps, fq_err_t *err) {
  char id[FQ_ID_LEN + 1];
  int rc = resolve_id(sh, req, acl, id, err);
  if (rc == FQ_ENOTFOUND) {
    not_found(sh, p, req);
    return 0;
  }
  if (rc) return rc;
  fq_cmdrec_t rec;
  if ((rc = fq_store_cmd_get(sh->store, id, FQ_ID_LEN, &rec, err)) != 0) return rc;
  if (rec.state != FQ_ST_QUEUED && rec.state != FQ_ST_SCHEDULED) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "command %s is %s; only a queued or scheduled command can be cancelled", id,
             fq_state_name(rec.state));
    fq_wire_reply_not_cancellable(&sh->replies, msg, rec.state, req->req_raw, req->req_raw_len);
    pend_close(sh, p);
    fq_cmdrec_free(&rec);
    return 0;
  }
  if (!ps->writes) {
    char msg[320];
    snprintf(msg, sizeof msg, "storage full: the cancel was not recorded (%s); command %s is "
             "still %s: try again", sh->full_why, id, fq_state_name(rec.state));
    fq_cmdrec_free(&rec);
    reply_error(sh, p, FQ_ESTORFULL, msg, req);
    return 0;
  }
  if (rec.state == FQ_ST_SCHEDULED) {
    if ((rc = fq_store_sched_del(sh->store, rec.not_before, rec.id, err)) != 0) {
      fq_cmdrec_free(&rec);
      return rc;
    }
    if (sh->nsched) sh->nsched--;
  }
  rc = transition(sh, &rec, FQ_ST_CANCELLED, "cancelled by request", 0, now, err);
  fq_cmdrec_free(&rec);
  if (rc) return rc;
  return reply_record(sh, p, id, req, err);
}

/* A restricted client's history without `tenant` skips other tenants'
 * events; this bounds how many one request may read (per event returned,
 * and in all), so that such a request cannot hold the shard long. */
#define HIST_EXAMINE_PER_EVENT 50
#define HIST_EXAMINE_MAX 20000

typedef struct hist_ctx {
  fq_str_t *ev;
  size_t n, limit;
  uint64_t last;       /* seq (tseq by tenant) of the last event examined */
  const acl_t *acl;    /* keep only these tenants' events; NULL: all */
} hist_ctx_t;

static int hist_visit(void *ud, uint64_t seq, const uint8_t *ev, size_t len) {
  hist_ctx_t *h = ud;
  h->last = seq;
  if (h->acl) {
    fq_str_t t;
    if (!event_tenant(ev, len, &t) || !acl_allows(h->acl, t.p, t.n)) return 0;
  }
  h->ev[h->n].p = (const char *)ev;
  h->ev[h->n].n = len;
  h->n++;
  return h->n == h->limit; /* a full page: stop */
}

/* history: a page of the shard's events in seq order, or with `tenant` of
 * that tenant's in tseq order; `next` is what to pass as `after` for the
 * next page.  With an ACL and no tenant, `next` is the seq of the last
 * event examined, returned or not, so that paging moves on through pages
 * of other tenants' events. */
static int handle_history(fq_shard_t *sh, pending_t *p, const fq_request_t *req,
                          const acl_t *acl, fq_err_t *err) {
  fq_str_t ev[FQ_WIRE_MAX_HISTORY];
  size_t limit = req->limit ? req->limit : 100;
  if (limit > FQ_WIRE_MAX_HISTORY) limit = FQ_WIRE_MAX_HISTORY;
  hist_ctx_t h = {ev, 0, limit, req->after, NULL};
  int rc;
  if (req->tenant.p) {
    if (!acl_allows(acl, req->tenant.p, req->tenant.n)) {
      char msg[160];
      snprintf(msg, sizeof msg, "this client may not read the history of tenant \"%.*s\"",
               (int)req->tenant.n, req->tenant.p);
      reply_error(sh, p, FQ_EFORBIDDEN, msg, req);
      return 0;
    }
    rc = fq_store_tenant_event_scan(sh->store, req->tenant.p, req->tenant.n, req->after, limit,
                                    hist_visit, &h, err);
  } else {
    size_t budget = limit;
    if (acl) {
      h.acl = acl;
      budget = limit * HIST_EXAMINE_PER_EVENT;
      if (budget > HIST_EXAMINE_MAX) budget = HIST_EXAMINE_MAX;
    }
    rc = fq_store_event_scan(sh->store, req->after, budget, hist_visit, &h, err);
  }
  if (rc < 0) return rc;
  /* Where retained history begins: an `after` below it is no error, the
   * page just starts there. */
  uint64_t first = 0;
  rc = req->tenant.p ? fq_store_tenant_first_tseq(sh->store, req->tenant.p, req->tenant.n,
                                                  &first, err)
                     : fq_store_first_seq(sh->store, &first, err);
  if (rc) return rc;
  fq_wire_reply_history(&sh->replies, ev, h.n, h.last, first, req->req_raw, req->req_raw_len);
  pend_close(sh, p);
  return 0;
}

/* --- campaigns (shard.h 'C') ---------------------------------------------
 *
 * The counts are read from the records themselves, inside the batch's
 * transaction: the reply leaves after the commit, so it shows exactly
 * what is durable, across restarts, with nothing kept in memory to drift.
 * A compact record holds its state in its third byte. */
typedef struct camp_ctx {
  fq_shard_t *sh;
  uint64_t counts[FQ_ST_COUNT_];
  char (*ids)[FQ_ID_LEN + 1];
  size_t n, cap;
  int rc;               /* the first failure of a visitor */
  fq_err_t *err;
} camp_ctx_t;

static int camp_count_visit(void *ud, const char *id) {
  camp_ctx_t *c = ud;
  const uint8_t *raw;
  size_t n;
  int rc = fq_store_cmd_raw(c->sh->store, id, FQ_ID_LEN, &raw, &n, c->err);
  if (rc == FQ_ENOTFOUND) return 0; /* pruned by retention */
  if (rc) {
    c->rc = rc;
    return 1;
  }
  int st = -1;
  if (n >= 3 && raw[0] == 0xC1) {
    st = raw[2];
  } else {
    fq_cmdrec_t rec;
    if (fq_cmdrec_unpack(raw, n, &rec, c->err) == 0) {
      st = rec.state;
      fq_cmdrec_free(&rec);
    }
  }
  if (st >= 0 && st < FQ_ST_COUNT_) c->counts[st]++;
  return 0;
}

/* Reply: 'N' then FQ_ST_COUNT_ u64 (native order: the ingress is this
 * process). */
static int campaign_counts(fq_shard_t *sh, pending_t *p, const char *camp, fq_err_t *err) {
  camp_ctx_t c;
  memset(&c, 0, sizeof c);
  c.sh = sh;
  c.err = err;
  int rc = fq_store_camp_scan(sh->store, camp, camp_count_visit, &c, err);
  if (c.rc) return c.rc;
  if (rc) return rc;
  if ((rc = fq_buf_append(&sh->replies, "N", 1)) ||
      (rc = fq_buf_append(&sh->replies, c.counts, sizeof c.counts)))
    return fq_errf(err, rc, "reply buffer");
  pend_close(sh, p);
  return 0;
}

static int camp_id_visit(void *ud, const char *id) {
  camp_ctx_t *c = ud;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 1024;
    void *np = realloc(c->ids, cap * sizeof *c->ids);
    if (!np) {
      c->rc = fq_errf(c->err, -ENOMEM, "out of memory");
      return 1;
    }
    c->ids = np;
    c->cap = cap;
  }
  memcpy(c->ids[c->n++], id, FQ_ID_LEN + 1);
  return 0;
}

/* Cancel the campaign's commands still scheduled or queued on this shard
 * (those in flight finish), at most ABORT_CHUNK per request so that one
 * batch's transaction and events stay bounded (the ingress asks again
 * while `more` says so).  Reply: 'A', u64 cancelled, u8 more. */
#define ABORT_CHUNK 2000

static int campaign_abort(fq_shard_t *sh, pending_t *p, const char *camp, int64_t now,
                          const pass_t *ps, fq_err_t *err) {
  camp_ctx_t c;
  memset(&c, 0, sizeof c);
  c.sh = sh;
  c.err = err;
  uint64_t cancelled = 0;
  uint8_t more = 0;
  int rc = 0;
  if (!ps->writes) {
    reply_error(sh, p, FQ_ESTORFULL, "storage full: the abort was not recorded; try again",
                NULL);
    return 0;
  }
  rc = fq_store_camp_scan(sh->store, camp, camp_id_visit, &c, err);
  if (c.rc) rc = c.rc;
  char reason[96];
  snprintf(reason, sizeof reason, "campaign %s aborted", camp);
  for (size_t i = 0; i < c.n && rc == 0; i++) {
    /* Most are terminal already: look at the state byte first. */
    const uint8_t *raw;
    size_t rl;
    rc = fq_store_cmd_raw(sh->store, c.ids[i], FQ_ID_LEN, &raw, &rl, err);
    if (rc == FQ_ENOTFOUND) {
      rc = 0;
      continue;
    }
    if (rc) break;
    if (rl >= 3 && raw[0] == 0xC1 && raw[2] != FQ_ST_SCHEDULED && raw[2] != FQ_ST_QUEUED)
      continue;
    if (cancelled == ABORT_CHUNK) {
      more = 1;
      break;
    }
    fq_cmdrec_t rec;
    if ((rc = fq_store_cmd_get(sh->store, c.ids[i], FQ_ID_LEN, &rec, err)) != 0) break;
    if (rec.state == FQ_ST_SCHEDULED) {
      rc = fq_store_sched_del(sh->store, rec.not_before, rec.id, err);
      if (rc == 0 && sh->nsched) sh->nsched--;
    }
    if (rc == 0 && (rec.state == FQ_ST_SCHEDULED || rec.state == FQ_ST_QUEUED)) {
      rc = transition(sh, &rec, FQ_ST_CANCELLED, reason, 0, now, err);
      if (rc == 0) cancelled++;
    }
    fq_cmdrec_free(&rec);
  }
  free(c.ids);
  if (rc) return rc;
  if ((rc = fq_buf_append(&sh->replies, "A", 1)) ||
      (rc = fq_buf_append(&sh->replies, &cancelled, sizeof cancelled)) ||
      (rc = fq_buf_append(&sh->replies, &more, 1)))
    return fq_errf(err, rc, "reply buffer");
  pend_close(sh, p);
  return 0;
}

static int handle_request(fq_shard_t *sh, pending_t *p, const uint8_t *body, size_t len,
                          const acl_t *acl, int64_t now, const pass_t *ps, fq_err_t *err) {
  fq_request_t req;
  fq_err_t derr;
  fq_err_clear(&derr);
  int rc = fq_wire_decode_request(body, len, &req, &derr);
  if (rc) {
    /* The ingress validated this already; answer anyway rather than drop. */
    reply_error(sh, p, rc, derr.msg, &req);
    return 0;
  }
  if (p->kind == 'C') {
    /* From the ingress's campaign side (shard.h 'C'): the kind frame
     * names the campaign. */
    char camp[65];
    size_t cl = p->klen - 1 < 64 ? p->klen - 1 : 64;
    memcpy(camp, p->kframe + 1, cl);
    camp[cl] = 0;
    switch (req.op) {
      case FQ_OP_SUBMIT: return handle_submit(sh, p, &req, now, false, NULL, ps, camp, err);
      case FQ_OP_CAMPAIGN_GET: return campaign_counts(sh, p, camp, err);
      case FQ_OP_CAMPAIGN_ABORT: return campaign_abort(sh, p, camp, now, ps, err);
      default:
        reply_error(sh, p, FQ_EBADREQ, "operation not handled for a campaign", &req);
        return 0;
    }
  }
  switch (req.op) {
    case FQ_OP_SUBMIT:
      return handle_submit(sh, p, &req, now, p->kind == 'F', acl, ps, NULL, err);
    case FQ_OP_GET: return handle_get(sh, p, &req, acl, err);
    case FQ_OP_CANCEL: return handle_cancel(sh, p, &req, now, acl, ps, err);
    case FQ_OP_HISTORY: return handle_history(sh, p, &req, acl, err);
    default:
      reply_error(sh, p, FQ_EBADREQ, "operation not handled by a shard", &req);
      return 0;
  }
}

static void flush_batch(fq_shard_t *sh);

/* --- expiry and recovery ------------------------------------------------ */

static int expire_due(fq_shard_t *sh, int64_t now, fq_err_t *err) {
  for (int i = 0; i < 1024; i++) {
    int64_t deadline;
    uint64_t num;
    if (fq_devq_first_deadline(sh->q, &deadline, &num) != 0) {
      sh->next_deadline = INT64_MAX;
      return 0;
    }
    if (deadline > now) {
      sh->next_deadline = deadline;
      return 0;
    }
    char id[FQ_ID_LEN + 1];
    fq_store_id_format(sh->o.index, num, id);
    fq_cmdrec_t rec;
    int rc = fq_store_cmd_get(sh->store, id, FQ_ID_LEN, &rec, err);
    if (rc == FQ_ENOTFOUND) {
      /* A stale entry whose command retention already removed. */
      fq_devq_remove(sh->q, num);
      if ((rc = fq_store_active_del(sh->store, id, err)) != 0) return rc;
      continue;
    }
    if (rc) return rc;
    if (fq_state_terminal(rec.state)) {
      rc = fq_store_active_del(sh->store, id, err); /* stale entry */
      fq_devq_remove(sh->q, num);
    } else if (rec.state == FQ_ST_QUEUED) {
      char reason[128];
      snprintf(reason, sizeof reason, "deadline passed after %" PRId64 " ms before dispatch",
               rec.ttl_ms);
      rc = transition(sh, &rec, FQ_ST_EXPIRED, reason, FQ_EEXPIRED, now, err);
    } else {
      /* In flight: the dispatcher owns its deadline; the expires_at it
       * signed already bounds what the car will accept. */
      fq_devq_clear_deadline(sh->q, num);
    }
    fq_cmdrec_free(&rec);
    if (rc) return rc;
  }
  sh->next_deadline = now; /* more to do: come back at once */
  return 0;
}

/* --- scheduled commands -------------------------------------------------
 *
 * A command submitted with a not_before ahead waits in the store's `sched`
 * index (time, id), in no device queue, and enters its device's queue,
 * at its tail, in the first batch at or after its time: the loop's poll
 * wakes for sh->next_sched.  At most RELEASE_BATCH are released per batch,
 * so that thousands due at the same millisecond (a campaign) never make
 * one huge transaction; the rest follow in the next batches at once.
 *
 * A command whose deadline (not_before + ttl_ms) passed before it could
 * be released, which happens only when fleetqd was down (or the shard was
 * stopped) over its time, ends `expired` instead.  A released command is
 * not coalesced: it supersedes nothing, and once queued it is an ordinary
 * queued command that a later coalescing submit may supersede. */
#define RELEASE_BATCH 512

static int sched_refresh(fq_shard_t *sh, fq_err_t *err);

typedef struct due_ctx {
  int64_t nb[RELEASE_BATCH];
  char id[RELEASE_BATCH][FQ_ID_LEN + 1];
  size_t n;
} due_ctx_t;

static int due_visit(void *ud, int64_t not_before, const char *id) {
  due_ctx_t *c = ud;
  c->nb[c->n] = not_before;
  memcpy(c->id[c->n], id, FQ_ID_LEN + 1);
  c->n++;
  return 0;
}

static int release_due(fq_shard_t *sh, int64_t now, fq_err_t *err) {
  static __thread due_ctx_t c;
  c.n = 0;
  int rc = fq_store_sched_due(sh->store, now, RELEASE_BATCH, due_visit, &c, err);
  if (rc) return rc;
  for (size_t i = 0; i < c.n; i++) {
    if ((rc = fq_store_sched_del(sh->store, c.nb[i], c.id[i], err)) != 0) return rc;
    if (sh->nsched) sh->nsched--;
    fq_cmdrec_t rec;
    rc = fq_store_cmd_get(sh->store, c.id[i], FQ_ID_LEN, &rec, err);
    if (rc == FQ_ENOTFOUND) continue; /* a stale row: nothing to release */
    if (rc) return rc;
    if (rec.state != FQ_ST_SCHEDULED) { /* a stale row of a command settled otherwise */
      fq_cmdrec_free(&rec);
      continue;
    }
    if (rec.deadline <= now) {
      char reason[200];
      snprintf(reason, sizeof reason,
               "deadline passed before it could be queued: scheduled for %" PRId64
               ", released %" PRId64 " ms late (fleetqd was not running, or could not "
               "write), ttl_ms %" PRId64,
               rec.not_before, now - rec.not_before, rec.ttl_ms);
      rc = transition(sh, &rec, FQ_ST_EXPIRED, reason, FQ_EEXPIRED, now, err);
    } else {
      /* The tail of its device's queue: behind what was submitted before
       * its time, and so in the queue position it gets now. */
      rec.qseq = fq_store_new_qseq(sh->store);
      if ((rc = fq_store_active_put(sh->store, &rec, err)) == 0 &&
          fq_devq_push(sh->q, rec.device, fq_store_id_num(rec.id), rec.deadline) != 0)
        rc = fq_errf(err, -ENOMEM, "out of memory for the device queues");
      if (rc == 0) {
        char reason[128] = "";
        if (now - rec.not_before > 1000)
          snprintf(reason, sizeof reason, "queued %" PRId64 " ms after its time (fleetqd was "
                   "not running, or could not write)", now - rec.not_before);
        rc = transition(sh, &rec, FQ_ST_QUEUED, reason, 0, now, err);
      }
      if (rc == 0) {
        if (rec.deadline < sh->next_deadline) sh->next_deadline = rec.deadline;
        if (sh->disp) fq_dispatch_kick(sh->disp, rec.device);
      }
    }
    fq_cmdrec_free(&rec);
    if (rc) return rc;
  }
  if (c.n == RELEASE_BATCH) {
    sh->next_sched = now; /* more may be due: the next batch, at once */
    return 0;
  }
  return sched_refresh(sh, err);
}

/* The rows of `active`, collected to be put in queue order (sorted by
 * queue position only when some scheduled command made it differ from the
 * id order the scan gives). */
typedef struct qent {
  uint64_t qpos, num;
  int64_t deadline;
  char device[FQ_DEVICE_MAX];
} qent_t;

typedef struct qcollect {
  qent_t *e;
  size_t n, cap;
  bool sorted;
} qcollect_t;

static int devq_visit(void *ud, const char *id, const char *device, int64_t deadline,
                      uint64_t qpos) {
  qcollect_t *c = ud;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 1024;
    qent_t *p = realloc(c->e, cap * sizeof *p);
    if (!p) return -ENOMEM;
    c->e = p;
    c->cap = cap;
  }
  qent_t *e = &c->e[c->n];
  if (c->n && c->e[c->n - 1].qpos > qpos) c->sorted = false;
  e->qpos = qpos;
  e->num = fq_store_id_num(id);
  e->deadline = deadline;
  size_t dl = strnlen(device, sizeof e->device - 1);
  memcpy(e->device, device, dl);
  e->device[dl] = 0;
  c->n++;
  return 0;
}

static int qent_cmp(const void *a, const void *b) {
  const qent_t *x = a, *y = b;
  if (x->qpos != y->qpos) return x->qpos < y->qpos ? -1 : 1;
  return x->num < y->num ? -1 : x->num > y->num;
}

/* The next scheduled time and the count, from the store (inside a
 * transaction). */
static int sched_refresh(fq_shard_t *sh, fq_err_t *err) {
  return fq_store_sched_next(sh->store, &sh->next_sched, &sh->nsched, err);
}

/* The direct rebuild: each row straight into its queue, as long as queue
 * order is id order (a row with a position of its own stops it: 1). */
static int devq_direct(void *ud, const char *id, const char *device, int64_t deadline,
                       uint64_t qpos) {
  fq_devq_t *q = ud;
  uint64_t num = fq_store_id_num(id);
  if (qpos != num) return 1;
  return fq_devq_push(q, device, num, deadline) != 0 ? -ENOMEM : 0;
}

/* Rebuild the in-memory queues from the store (inside a transaction).
 * The scan gives id order, which is queue order except for commands that
 * were scheduled and entered their queue when their time came (their row
 * carries the position): only while such a command is queued are the
 * rows collected and sorted first, at 56 bytes each; otherwise they go
 * straight into the queues. */
static int rebuild_queues(fq_shard_t *sh, fq_err_t *err) {
  fq_devq_destroy(&sh->q);
  sh->q = fq_devq_new();
  if (!sh->q) return fq_errf(err, -ENOMEM, "out of memory for the device queues");
  fq_store_stats_t st;
  int rc = fq_store_stats(sh->store, &st, err);
  if (rc) return rc;
  if (fq_devq_reserve(sh->q, st.queued) != 0)
    return fq_errf(err, -ENOMEM, "out of memory for the device queues");
  rc = fq_store_active_scan_q(sh->store, devq_direct, sh->q, err);
  if (rc == 1) {
    fq_devq_destroy(&sh->q);
    sh->q = fq_devq_new();
    if (!sh->q || fq_devq_reserve(sh->q, st.queued) != 0)
      return fq_errf(err, -ENOMEM, "out of memory for the device queues");
    qcollect_t c = {NULL, 0, 0, true};
    rc = fq_store_active_scan_q(sh->store, devq_visit, &c, err);
    if (rc == 0 && !c.sorted) qsort(c.e, c.n, sizeof *c.e, qent_cmp);
    for (size_t i = 0; rc == 0 && i < c.n; i++)
      if (fq_devq_push(sh->q, c.e[i].device, c.e[i].num, c.e[i].deadline) != 0) rc = -ENOMEM;
    free(c.e);
  }
  if (rc == -ENOMEM) return fq_errf(err, -ENOMEM, "out of memory for the device queues");
  if (rc) return rc;
  int64_t d;
  uint64_t num;
  sh->next_deadline = fq_devq_first_deadline(sh->q, &d, &num) == 0 ? d : INT64_MAX;
  return sched_refresh(sh, err);
}

/* The queues from the restart snapshot the store was opened with (it
 * matched the store: store.h), inside the transaction: *used tells.  A
 * snapshot without valid queues is only a rebuild from `active`. */
static int load_queues(fq_shard_t *sh, bool *used, fq_err_t *err) {
  size_t n = 0;
  const uint64_t *w = fq_store_snapshot_extra(sh->store, &n);
  *used = false;
  if (!w) return 0;
  int rc = fq_devq_import(sh->q, w, n);
  fq_store_snapshot_release(sh->store);
  if (rc == 0) {
    int64_t d;
    uint64_t num;
    sh->next_deadline = fq_devq_first_deadline(sh->q, &d, &num) == 0 ? d : INT64_MAX;
    *used = true;
    return sched_refresh(sh, err);
  }
  fq_warn("shard", "shard %u: the queues of the restart snapshot do not load (%s): rebuilding "
          "them from the store", sh->o.index, fq_strerror(rc));
  fq_devq_destroy(&sh->q);
  sh->q = fq_devq_new();
  return sh->q ? 0 : fq_errf(err, -ENOMEM, "out of memory");
}

/* The devices that have a queue, collected before the settlement changes
 * the queues. */
typedef struct heads {
  char (*dev)[FQ_DEVICE_MAX];
  size_t n, cap;
} heads_t;

static int heads_visit(void *ud, const char *device, uint64_t num) {
  heads_t *h = ud;
  (void)num;
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 256;
    void *p = realloc(h->dev, cap * sizeof *h->dev);
    if (!p) return -ENOMEM;
    h->dev = p;
    h->cap = cap;
  }
  snprintf(h->dev[h->n++], FQ_DEVICE_MAX, "%s", device);
  return 0;
}

/* Settle what was in flight when the previous process died (inside the
 * open write transaction, with the queues rebuilt).  Idempotent commands
 * go back to the queue, and so does every command whose request was not
 * out (anything but `sent`); a non-idempotent `sent` one ends `unknown`,
 * because the car may have executed it and it must never be re-signed
 * blindly.
 *
 * Only the head of each device's queue can be in flight: the dispatcher
 * starts a device's head and nothing else, and a started command stays
 * the head until it ends (dispatch.c, start_next; a command that is not
 * queued anywhere else is settled by it as a lost attempt).  So this reads
 * one record per device, not one per stored command: a restart with a
 * million queued commands reads ten thousand records for ten thousand
 * cars, and the pages of the others are never touched.  A head that has
 * ended (its `active` row outlived it) or whose record retention removed
 * is dropped and the next one looked at. */
static int settle_inflight(fq_shard_t *sh, int64_t now, fq_err_t *err) {
  heads_t h = {0};
  int rc = fq_devq_each_head(sh->q, heads_visit, &h);
  if (rc) {
    free(h.dev);
    return fq_errf(err, -ENOMEM, "out of memory for the settlement");
  }
  size_t settled = 0, checked = 0;
  for (size_t i = 0; rc == 0 && i < h.n; i++) {
    for (;;) {
      uint64_t num;
      if (fq_devq_list(sh->q, h.dev[i], &num, 1) == 0) break;
      char id[FQ_ID_LEN + 1];
      fq_store_id_format(sh->o.index, num, id);
      fq_cmdrec_t rec;
      checked++;
      rc = fq_store_cmd_get(sh->store, id, FQ_ID_LEN, &rec, err);
      if (rc == FQ_ENOTFOUND) {
        fq_devq_remove(sh->q, num);
        if ((rc = fq_store_active_del(sh->store, id, err)) != 0) break;
        continue;
      }
      if (rc) break;
      bool next = false;
      if (fq_state_terminal(rec.state)) {
        fq_devq_remove(sh->q, num);
        rc = fq_store_active_del(sh->store, rec.id, err);
        next = true;
      } else if (rec.state != FQ_ST_QUEUED) {
        const fq_cmd_t *cmd = fq_cmd_find(rec.command, strlen(rec.command),
                                          rec.vin[0] ? FQ_DEV_VEHICLE : FQ_DEV_SITE, NULL);
        if (cmd && cmd->idempotent)
          rc = transition(sh, &rec, FQ_ST_QUEUED,
                          sh->cn ? "re-queued after a takeover while in flight (idempotent "
                                   "command)"
                                 : "re-queued after a restart while in flight (idempotent command)",
                          0, now, err);
        else if (rec.state != FQ_ST_SENT)
          /* Only `sent` means a request of the command itself may be out:
           * `dispatching` (at most a handshake out), `waking` and
           * `retrying` (the last attempt was answered, and the next one
           * would have been `sent` first) never reached the car unanswered. */
          rc = transition(sh, &rec, FQ_ST_QUEUED,
                          "re-queued after a restart: it had not been sent when fleetqd stopped",
                          0, now, err);
        else {
          /* Terminal: it left the queue, and the next head may start. */
          rc = transition(sh, &rec, FQ_ST_UNKNOWN,
                          sh->cn ? "the fleetqd node serving this command's shard stopped or "
                                   "lost it while the command was in flight: it may have been "
                                   "executed; check the device before sending it again"
                                 : "fleetqd stopped while this command was in flight: it may "
                                   "have been executed; check the device before sending it again",
                          FQ_EINTERNAL, now, err);
          next = true;
        }
        settled++;
      }
      fq_cmdrec_free(&rec);
      if (rc || !next) break;
    }
  }
  free(h.dev);
  if (rc) return rc;
  if (settled) fq_info("shard", "shard %u: settled %zu in-flight command(s)", sh->o.index, settled);
  fq_debug("shard", "shard %u: looked at %zu queue head(s) of %zu device(s) for commands in flight",
           sh->o.index, checked, h.n);
  return 0;
}

/* Commit the open transaction.  In cluster mode, as the owner, a write
 * transaction that wrote anything goes into the shard's log first
 * (fq_replica_commit: fenced by the log's last sequence, committed locally
 * only once a quorum has it; aborted otherwise).  A fenced append or one
 * that got no answer sets sh->lost: the shard steps down after the batch
 * (a successor appended, or the append may still land and this copy must
 * catch up before it writes again). */
static int shard_commit(fq_shard_t *sh, bool write, fq_err_t *err) {
  if (!sh->cn || !sh->owner || !write || sh->ws.nops == 0) return fq_store_commit(sh->store, err);
  int rc = fq_replica_commit(sh->store, &sh->ws, sh->cl, &sh->rep, err);
  if (rc == 0) {
    fq_metrics_cluster_log(sh->o.index, 1, 0);
    return 0;
  }
  fq_error("shard", "shard %u: the batch is not in the log: %s", sh->o.index, err->msg);
  /* Whatever went wrong, this copy may now be behind the log: stop
   * serving, follow the log, let the lease decide who serves next. */
  sh->lost = true;
  return rc;
}

/* On start: settle what was in flight (above), then rebuild the in-memory
 * queues.  A store too full (or a disk too full) to take the settlement
 * still starts and serves: the settlement is written by the first batch
 * that can write, before the dispatcher's step in the same transaction
 * (so nothing of this process is ever taken for a leftover). */
static int recover(fq_shard_t *sh, fq_err_t *err) {
  int64_t now = fq_now_ms(), t0 = fq_mono_ns(), t1 = t0, t2 = t0;
  fq_devq_destroy(&sh->q);
  sh->q = fq_devq_new();
  if (!sh->q) return fq_errf(err, -ENOMEM, "out of memory");
  int rc = fq_store_begin(sh->store, true, err);
  bool from_snap = false;
  /* In cluster mode the snapshot read at open is long stale by now (the
   * copy followed the log since): the queues are rebuilt. */
  if (rc == 0 && !sh->cn) rc = load_queues(sh, &from_snap, err);
  if (rc == 0 && !from_snap) rc = rebuild_queues(sh, err);
  t1 = fq_mono_ns();
  if (rc == 0) rc = settle_inflight(sh, now, err);
  t2 = fq_mono_ns();
  if (rc == 0) rc = shard_commit(sh, true, err);
  else fq_store_abort(sh->store);
  if (rc && sh->lost) return rc; /* a takeover that could not write: not ours */
  if (rc == FQ_ESTORFULL || rc == FQ_ESTORAGE) {
    fq_warn("shard", "shard %u: cannot write the settlement of the commands in flight at the "
            "last stop (%s): starting without it; it is written as soon as there is room",
            sh->o.index, err->msg);
    sh->recover_pending = true;
    sh->npev = 0;
    fq_buf_reset(&sh->evbuf);
    sh->nendl = 0; /* logged when the settlement is written */
    sh->endl_over = 0;
    if ((rc = fq_store_begin(sh->store, false, err)) != 0) return rc;
    rc = rebuild_queues(sh, err);
    fq_store_abort(sh->store);
  }
  if (rc) return rc;
  /* The commands the last stop left unknown or expired, now committed. */
  endlog_flush(sh, now);
  sh->changed = false;
  /* The settlement events stay in the batch buffers: the thread publishes
   * them first thing (recovery runs in fq_shard_new, whose thread must not
   * use the socket). */
  /* What a restart costs, once per start (the store's part is logged by
   * fq_store_open). */
  int64_t t3 = fq_mono_ns();
  fq_info("shard", "shard %u: %zu queued command(s), next seq %" PRIu64 "; recovered in %.0f ms: "
          "%s the queues in %.0f ms, settled in %.0f ms, committed in %.0f ms",
          sh->o.index, fq_devq_count(sh->q), fq_store_next_seq(sh->store),
          (double)(t3 - t0) / 1e6, from_snap ? "loaded (snapshot)" : "rebuilt",
          (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6,
          (double)(t3 - t2) / 1e6);
  return 0;
}

/* --- I/O --------------------------------------------------------------- */

static int put_u32(fq_buf_t *b, size_t v) {
  uint32_t x = (uint32_t)v;
  return fq_buf_append(b, &x, 4);
}

/* Send everything the batch produced as ONE inproc message: frame 'B' then
 * a frame of records (native byte order: both ends are this process):
 *   'E' u32 topic_len topic u32 len event
 *   'R' u8 nenv {u32 len bytes}*nenv u32 len reply
 *   'F' u64 token u8 found u8 nenv {u32 len bytes}*nenv u32 len reply
 * One message instead of several frames per request keeps the per-command
 * cost of the hop to the ingress (which owns the client sockets) small.
 * Events come first: a client that sees a reply can trust the matching
 * event has been published. */
/* The metrics of a batch that is committed and sent: submits answered
 * (a lookup that found nothing is not an answer), ack times, commands
 * that ended.  Counted only now, since a batch may be applied again or
 * fail before. */
static void count_batch(fq_shard_t *sh) {
  int64_t t = fq_mono_ns();
  for (size_t i = 0; i < sh->npend; i++) {
    const pending_t *p = &sh->pend[i];
    if (p->sub == SUB_NONE || (p->kind == 'F' && !p->found)) continue;
    fq_metrics_submit(p->sub);
    if (p->sub == FQ_METRICS_ACCEPTED) fq_metrics_ack_ns(t - p->rcvd_ns);
  }
  for (size_t i = 0; i < sh->npev; i++)
    if (fq_state_terminal(sh->pev[i].state))
      fq_metrics_terminal(sh->pev[i].state, sh->pev[i].age_ms);
}

/* The shard's gauges, after each batch. */
static void count_load(fq_shard_t *sh) {
  fq_dispatch_stats_t st = {0};
  if (sh->disp) fq_dispatch_stats(sh->disp, &st);
  fq_metrics_shard_load(sh->o.index, fq_devq_count(sh->q), st.inflight);
  fq_metrics_shard_scheduled(sh->o.index, sh->nsched);
}

static void flush_batch(fq_shard_t *sh) {
  if (sh->npev == 0 && sh->npend == 0) return;
  fq_buf_t *b = &sh->scratch;
  fq_buf_reset(b);
  int rc = 0;
  for (size_t i = 0; i < sh->npev && !rc; i++) {
    pevent_t *pe = &sh->pev[i];
    rc = fq_buf_append(b, "E", 1) || put_u32(b, pe->topic_len) ||
         fq_buf_append(b, sh->evbuf.data + pe->topic_off, pe->topic_len) ||
         put_u32(b, pe->len) || fq_buf_append(b, sh->evbuf.data + pe->off, pe->len);
  }
  for (size_t i = 0; i < sh->npend && !rc; i++) {
    pending_t *p = &sh->pend[i];
    uint8_t nenv = (uint8_t)p->nenv;
    rc = fq_buf_append(b, p->kind == 'F' ? "F" : p->kind == 'C' ? "C" : "R", 1);
    if (!rc && p->kind == 'F')
      rc = fq_buf_append(b, p->token, 8) || fq_buf_append(b, &p->found, 1);
    if (!rc) rc = fq_buf_append(b, &nenv, 1);
    for (int j = 0; j < p->nenv && !rc; j++)
      rc = put_u32(b, zmq_msg_size(&p->env[j])) ||
           fq_buf_append(b, zmq_msg_data(&p->env[j]), zmq_msg_size(&p->env[j]));
    if (!rc)
      rc = put_u32(b, p->len) || fq_buf_append(b, sh->replies.data + p->off, p->len);
  }
  if (rc) /* only an allocation can fail here, and the batch is committed */
    fq_fatal("shard %u: cannot encode a committed batch for the ingress: out of memory",
             sh->o.index);
  /* Counted before the replies leave: a client that has its ack and then
   * reads the metrics finds its submit counted (test_metrics once saw 204
   * of 205 on a loaded machine). */
  count_batch(sh);
  zmq_send(sh->sock, "B", 1, ZMQ_SNDMORE);
  zmq_send(sh->sock, b->data, b->len, 0);
  for (size_t i = 0; i < sh->npend; i++)
    for (int j = 0; j < sh->pend[i].nenv; j++) zmq_msg_close(&sh->pend[i].env[j]);
  sh->npend = sh->npev = 0;
  fq_buf_reset(&sh->replies);
  fq_buf_reset(&sh->evbuf);
  /* A large batch (many `get`s of large commands, history pages) leaves
   * its buffers large: give the memory back rather than keep it. */
  fq_buf_t *big[] = {&sh->replies, &sh->evbuf, &sh->scratch};
  for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
    if (big[i]->alloc > BATCH_OUT_MAX / 2) {
      fq_buf_free(big[i]);
      fq_buf_init(big[i], 0);
    }
}

/* Replace every reply of the batch with one error (no transaction could
 * be had at all), each with its request's `req`, and drop its events:
 * none of them happened. */
static void fail_batch(fq_shard_t *sh, int code, const char *msg) {
  fq_buf_reset(&sh->replies);
  sh->npev = 0;
  fq_buf_reset(&sh->evbuf);
  for (size_t i = 0; i < sh->npend; i++) {
    pending_t *p = &sh->pend[i];
    fq_request_t req;
    fq_err_t derr;
    memset(&req, 0, sizeof req);
    if (!p->over) fq_wire_decode_request(p->body, p->blen, &req, &derr); /* for its req only */
    p->sub = req.op == FQ_OP_SUBMIT ? code : SUB_NONE;
    p->off = sh->replies.len;
    fq_wire_reply_error(&sh->replies, code, msg, req.req_raw, req.req_raw_len);
    p->len = sh->replies.len - p->off;
  }
}

/* Forget what a failed attempt at the batch produced: its replies and
 * events (the transaction holding them is gone). */
static void reset_batch(fq_shard_t *sh) {
  fq_buf_reset(&sh->replies);
  sh->npev = 0;
  fq_buf_reset(&sh->evbuf);
  for (size_t i = 0; i < sh->npend; i++) {
    sh->pend[i].off = 0;
    sh->pend[i].len = 0;
    sh->pend[i].found = 1;
    sh->pend[i].sub = SUB_NONE;
  }
}

/* After an aborted transaction: the dispatcher, the in-memory queues and
 * the pruning's pending changes go back to what is on disk. */
static void undo(fq_shard_t *sh) {
  fq_store_abort(sh->store);
  sh->nendl = 0; /* those ends did not happen */
  sh->endl_over = 0;
  sh->changed = false;
  fq_retention_aborted(sh->ret);
  if (sh->disp) fq_dispatch_rollback(sh->disp);
  fq_err_t e2;
  fq_err_clear(&e2);
  int rc = fq_store_begin(sh->store, false, &e2);
  if (rc == 0) rc = rebuild_queues(sh, &e2);
  fq_store_abort(sh->store);
  /* Only memory can fail here (a read transaction of a store that was
   * just written): the queues cannot be trusted without it. */
  if (rc) fq_fatal("shard %u: cannot rebuild queues: %s; stopping", sh->o.index, e2.msg);
}

/* When pruning is next due: the retention's time, unless a transaction
 * that pruned alone failed lately (see process_batch). */
static int64_t prune_due(const fq_shard_t *sh) {
  int64_t due = fq_retention_due(sh->ret);
  return due < sh->prune_retry_at ? sh->prune_retry_at : due;
}

/* One attempt at the batch within ps's limits: one transaction, committed.
 * 0, or the error (already undone: aborted, dispatcher rolled back, queues
 * rebuilt, pruning forgotten).  *taken gets how many of the pending
 * requests it handled: it stops once their output reaches BATCH_OUT_MAX,
 * and the rest wait for the next batch. */
static int run_pass(fq_shard_t *sh, const pass_t *ps, int64_t now, const zmq_pollitem_t *hitems,
                    int nh, bool *drain_final, size_t *taken, fq_err_t *err) {
  *taken = 0;
  int rc = fq_store_begin(sh->store, ps->writes, err);
  if (rc) return rc;
  if (ps->submits) rc = measure(sh, err);
  if (rc == 0 && ps->writes && sh->recover_pending) rc = settle_inflight(sh, now, err);
  size_t i;
  for (i = 0; i < sh->npend && rc == 0; i++) {
    if (i > 0 && sh->replies.len + sh->evbuf.len >= BATCH_OUT_MAX) break;
    if (i > 0 && sh->owner && sh->ws.ops.len >= WS_CUT) break; /* one log message */
    pending_t *p = &sh->pend[i];
    p->off = sh->replies.len;
    if (p->over) {
      char msg[96];
      snprintf(msg, sizeof msg, "too many frames: at most %d envelope frames before the body",
               FQ_WIRE_MAX_ENVELOPE);
      reply_error(sh, p, FQ_EBADREQ, msg, NULL);
      continue;
    }
    acl_t acl_buf;
    const acl_t *acl = p->kind == 'C' ? NULL : acl_parse(p->kframe, p->klen, &acl_buf);
    rc = handle_request(sh, p, p->body, p->blen, acl, now, ps, err);
    if (rc) fq_error("shard", "shard %u: %s", sh->o.index, err->msg);
  }
  *taken = i;
  /* Stopping: settle what waits before the step, so that the step starts
   * nothing new, and again after it for what its answers left waiting. */
  if (rc == 0 && ps->dispatch && sh->drain_until)
    rc = fq_dispatch_drain(sh->disp, now, false, err);
  /* Scheduled commands whose time came enter their queues before the
   * step, which may then start them; not while stopping, when the step
   * must start nothing new (they are released by the next start). */
  if (rc == 0 && ps->writes && !sh->drain_until && now >= sh->next_sched)
    rc = release_due(sh, now, err);
  if (rc == 0 && ps->dispatch) {
    rc = fq_dispatch_step(sh->disp, hitems, nh, now, err);
    if (rc) fq_error("shard", "shard %u: dispatch: %s", sh->o.index, err->msg);
  }
  if (rc == 0 && ps->dispatch && sh->drain_until) {
    *drain_final = now >= sh->drain_until;
    rc = fq_dispatch_drain(sh->disp, now, *drain_final, err);
    if (rc) fq_error("shard", "shard %u: drain: %s", sh->o.index, err->msg);
  }
  if (rc == 0 && ps->writes && now >= sh->next_deadline) rc = expire_due(sh, now, err);
  /* Bounded, and in a nested transaction: it cannot fail the pass.  Also
   * in the passes of a full store: pruning is how a full map gets room
   * back. */
  if (rc == 0 && ps->writes && now >= prune_due(sh)) fq_retention_step(sh->ret, now);
  int64_t t_proc = TNOW();
  if (rc == 0) {
    sh->commit_t0 = fq_mono_ns();
    rc = shard_commit(sh, ps->writes, err);
    sh->commit_ns = fq_mono_ns() - sh->commit_t0;
    sh->tr_commit += TNOW() - t_proc;
    if (rc == 0) {
      if (ps->writes) fq_retention_committed(sh->ret);
      if (sh->changed) sh->last_change_ms = now;
      sh->changed = false;
      endlog_flush(sh, now);
      if (ps->writes && sh->recover_pending) {
        sh->recover_pending = false;
        fq_info("shard", "shard %u: the commands in flight at the last stop are settled",
                sh->o.index);
      }
      return 0;
    }
    fq_error("shard", "shard %u: commit failed: %s", sh->o.index, err->msg);
    /* The store has no transaction left; the dispatcher and the queues
     * are undone below like after an abort. */
  }
  undo(sh);
  return rc;
}

/* A batch that could not write anything: prune alone, in a transaction of
 * its own, since deleting is what gives a full map room back.  A failure
 * here waits PROBE_MS before the next try (the step itself may say "now"
 * when it has more to do, which would otherwise spin on failed commits). */
static void prune_alone(fq_shard_t *sh, int64_t now) {
  fq_err_t err;
  fq_err_clear(&err);
  if (fq_store_begin(sh->store, true, &err) != 0) {
    sh->prune_retry_at = now + PROBE_MS;
    return;
  }
  fq_retention_step(sh->ret, now);
  if (shard_commit(sh, true, &err) == 0) {
    fq_retention_committed(sh->ret);
    return;
  }
  fq_retention_aborted(sh->ret);
  sh->prune_retry_at = now + PROBE_MS;
}

/* Tell the ingress which (tenant, key) hashes this shard no longer holds
 * (their keys left the dedupe window), with the number of requests it had
 * received when the batch that dropped them ran: a request sent after
 * that may have stored the key again, and the ingress keeps its entry
 * then.  Frame: u64 received, u64 hash... (native byte order). */
static void announce_gone(fq_shard_t *sh) {
  const uint64_t *h;
  size_t n = fq_retention_take_gone(sh->ret, &h);
  for (size_t off = 0; off < n;) {
    size_t k = n - off < 8191 ? n - off : 8191;
    uint64_t buf[8192];
    buf[0] = sh->received;
    memcpy(buf + 1, h + off, k * 8);
    zmq_send(sh->sock, "X", 1, ZMQ_SNDMORE);
    zmq_send(sh->sock, buf, (k + 1) * 8, 0);
    off += k;
  }
}

/* The group commit of one batch.  Replies and events leave only after the
 * transaction holding them is committed.  When it cannot be (the map is
 * full, the disk is full, a write fails), the batch is applied again,
 * each time asking less of the store, and answered by the first attempt
 * that commits:
 *   1. everything: new commands (within the map's high-water mark),
 *      cancels, the dispatcher's step, deadlines, pruning;
 *   2. no new command: submits that are not duplicates get storage_full;
 *      the rest as in 1, so commands already accepted keep going;
 *   3. as 2 without the dispatcher (its answers are kept for later);
 *   4. read only: get, history and duplicate submits are answered, a
 *      cancel of a queued command gets storage_full; pruning, when due,
 *      is tried on its own after it (prune_alone).
 * A failure also lowers where the next batches start for a while (new
 * commands: PROBE_MS; the dispatcher: a backoff; writes: PROBE_MS), so
 * that a full disk costs a failed commit per second, not per batch, and
 * the shard finds out by itself when room is back.
 *
 * Returns how many of the messages it took: fewer than nmsgs when the
 * output of their requests reached BATCH_OUT_MAX (the caller keeps the
 * rest for the next batch). */
static int process_batch(fq_shard_t *sh, zmq_msg_t (*msgs)[MAX_FRAMES + 2], int *counts,
                         int nmsgs, const zmq_pollitem_t *hitems, int nh) {
  fq_err_t err;
  fq_err_clear(&err);
  int64_t now = fq_now_ms();
  int64_t t_start = TNOW();
  int64_t w_start = fq_mono_ns();
  sh->commit_t0 = w_start;
  sh->commit_ns = 0;
  int stop_at = -1; /* a 'T' without a dispatcher: stop after this batch, if taken */
  for (int m = 0; m < nmsgs; m++) {
    zmq_msg_t *f = msgs[m];
    int n = counts[m];
    const char *kind = zmq_msg_data(&f[0]);
    size_t klen = zmq_msg_size(&f[0]);
    if (klen == 0) continue;
    if (*kind == 'T') {
      sh->handing_over = false; /* the drain of a handover becomes the stop's */
      /* Without a dispatcher nothing is in flight: stop after this batch. */
      if (!sh->disp) {
        if (stop_at < 0) stop_at = m;
      } else if (!sh->drain_until) {
        sh->drain_until = now + sh->o.drain_timeout_ms;
      }
      continue;
    }
    /* More frames than the limit (the ingress refuses such requests, so
     * this is a second line of defence): none of those kept is taken as
     * the body, the request is refused with the envelope it came with. */
    bool over = n < 0;
    if (over) n = -n;
    int first_env = (*kind == 'F') ? 2 : 1;
    if (n < first_env + 1) continue;
    int nenv = over ? n - first_env : n - first_env - 1;
    if (nenv > MAX_ENV) {
      over = true;
      nenv = MAX_ENV;
    }
    pending_t *p = pend_add(sh, *kind == 'F' ? 'F' : *kind == 'C' ? 'C' : 'R', &f[first_env], nenv);
    if (!p) continue;
    if (*kind == 'F') memcpy(p->token, zmq_msg_data(&f[1]), 8);
    p->msg = m;
    p->env_at = first_env;
    p->over = over;
    p->kframe = kind;
    p->klen = klen;
    p->rcvd_ns = sh->rcvd[m];
    p->body = over ? NULL : zmq_msg_data(&f[n - 1]);
    p->blen = over ? 0 : zmq_msg_size(&f[n - 1]);
  }
  bool disp_ok = sh->disp && now >= sh->disp_retry_at;
  pass_t passes[4] = {{true, true, disp_ok}, {false, true, disp_ok}, {false, true, false},
                      {false, false, false}};
  int first = now < sh->readonly_until ? 3 : now < sh->nosubmit_until ? 1 : 0;
  /* A standby answers nothing itself (the ingress forwards to the owner;
   * what reaches it came while the shard was moving): every request gets
   * busy, to be retried with the same key. */
  bool standby = sh->cn && !sh->owner;
  if (standby) first = 4;
  bool drain_final = false, stepped = false;
  size_t taken = sh->npend;
  int rc = -1, ip;
  for (ip = first; ip < 4; ip++) {
    if (ip == 2 && !passes[1].dispatch) continue; /* the same as 1 */
    reset_batch(sh);
    drain_final = false;
    fq_err_clear(&err);
    rc = run_pass(sh, &passes[ip], now, hitems, nh, &drain_final, &taken, &err);
    if (rc == 0) {
      stepped = passes[ip].dispatch;
      break;
    }
    /* The log refused or did not answer: this node no longer serves the
     * shard (sh->lost); no other pass would fare better. */
    if (sh->lost) break;
    /* What the failure says about the next batches. */
    if (ip == 0) {
      sh->nosubmit_until = now + PROBE_MS;
      storage_trouble(sh, &err);
    } else if (ip == 1 && passes[1].dispatch) {
      sh->disp_backoff = sh->disp_backoff ? sh->disp_backoff * 2 : 100;
      if (sh->disp_backoff > 2000) sh->disp_backoff = 2000;
      sh->disp_retry_at = now + sh->disp_backoff;
      storage_trouble(sh, &err);
    } else if (ip < 3) {
      sh->readonly_until = now + PROBE_MS;
      storage_trouble(sh, &err);
    }
  }
  /* Only a pass that ran answers requests: no transaction at all answers
   * them all (below); a committed pass answers those it took. */
  if (rc) taken = sh->npend;
  int done = taken < sh->npend ? sh->pend[taken].msg : nmsgs;
  /* pend_add moved their envelope out of the message: give it back, the
   * carried message is taken again whole by the next batch. */
  for (size_t i = taken; i < sh->npend; i++) {
    pending_t *p = &sh->pend[i];
    for (int j = 0; j < p->nenv; j++) {
      zmq_msg_move(&msgs[p->msg][p->env_at + j], &p->env[j]);
      zmq_msg_close(&p->env[j]);
    }
  }
  sh->npend = taken;
  for (int m = 0; m < done; m++) {
    const char *kind = zmq_msg_data(&msgs[m][0]);
    if (zmq_msg_size(&msgs[m][0]) && (*kind == 'Q' || *kind == 'F' || *kind == 'C'))
      sh->received++;
  }
  if (stop_at >= 0 && stop_at < done) sh->stopping = true;
  if (rc == 0 && ip == 3 && now >= prune_due(sh)) prune_alone(sh, now);
  sh->tr_proc += TNOW() - t_start;
  sh->tr_msgs += (uint64_t)done;
  if (rc && (standby || sh->lost)) {
    char msg[FQ_ERRMSG_MAX + 96];
    snprintf(msg, sizeof msg, "shard %u is moving between cluster nodes (%s); retry with the same "
             "key", sh->o.index, standby ? "not served by this node now" : err.msg);
    fail_batch(sh, FQ_EBUSY, msg);
  } else if (rc) {
    /* Not even a read transaction: every request gets the error. */
    fq_error("shard", "shard %u: no transaction at all: %s", sh->o.index, err.msg);
    char msg[FQ_ERRMSG_MAX + 64];
    snprintf(msg, sizeof msg, "storage error: the request was not handled (%s)", err.msg);
    fail_batch(sh, rc == FQ_ESTORFULL ? FQ_ESTORFULL : FQ_EINTERNAL, msg);
  } else if (stepped) {
    sh->disp_backoff = 0;
  }
  /* Answers that came while the dispatcher could not act wait for it. */
  if (sh->disp && !stepped) fq_dispatch_collect(sh->disp, hitems, nh);
  /* Stopping: done once nothing waits for an answer, or the drain time is
   * up (a failed final batch still stops: what it did not record is
   * settled by the next start). */
  if (sh->drain_until && (drain_final || now >= sh->drain_until || fq_dispatch_drained(sh->disp))) {
    if (sh->handing_over) sh->handover_ready = true; /* cluster_tick steps down */
    else sh->stopping = true;
  }
  int64_t t_f = TNOW();
  flush_batch(sh);
  announce_gone(sh);
  int64_t t_l = TNOW();
  if (sh->disp) fq_dispatch_launch(sh->disp, fq_now_ms());
  count_load(sh);
  fq_metrics_batch(sh->o.index, rc ? 0 : taken, sh->commit_t0 - w_start, sh->commit_ns,
                   fq_mono_ns() - w_start);
  sh->tr_flush += t_l - t_f;
  sh->tr_launch += TNOW() - t_l;
  sh->tr_batches++;
  return done;
}

static int dispatch_transition(void *shard, fq_cmdrec_t *rec, int state, const char *reason,
                               int error, int64_t now, bool put, fq_err_t *err) {
  return transition_put(shard, rec, state, reason, error, now, put, err);
}


/* Keys go to the ingress 65,536 (512 KiB) a message: a million keys are
 * 16 messages a shard, not 128. */
#define KEYS_BATCH 65536

typedef struct keys_ctx {
  void *sock;
  uint64_t buf[KEYS_BATCH];
  size_t n;
} keys_ctx_t;

static int keys_visit(void *ud, uint64_t h, uint64_t num) {
  keys_ctx_t *k = ud;
  (void)num;
  k->buf[k->n++] = h;
  if (k->n == KEYS_BATCH) {
    zmq_send(k->sock, "K", 1, ZMQ_SNDMORE);
    zmq_send(k->sock, k->buf, k->n * 8, 0);
    k->n = 0;
  }
  return 0;
}

/* Tell the ingress which (tenant, key) hashes this shard holds, so that a
 * key reused for a device of another shard is still checked here. */
static void announce_keys(fq_shard_t *sh) {
  keys_ctx_t *k = sh->keys;
  int64_t t0 = fq_mono_ns();
  k->sock = sh->sock;
  k->n = 0;
  /* The count first: the ingress sizes its table for every shard's keys
   * once, instead of growing it (a copy of every key) as they arrive. */
  uint64_t count = fq_store_idem_count(sh->store);
  zmq_send(sh->sock, "N", 1, ZMQ_SNDMORE);
  zmq_send(sh->sock, &count, 8, 0);
  fq_store_idem_foreach(sh->store, keys_visit, k);
  if (k->n) {
    zmq_send(sh->sock, "K", 1, ZMQ_SNDMORE);
    zmq_send(sh->sock, k->buf, k->n * 8, 0);
  }
  zmq_send(sh->sock, "L", 1, 0);
  fq_info("shard", "shard %u: announced %zu keys to the ingress in %.0f ms", sh->o.index,
          fq_store_idem_count(sh->store), (double)(fq_mono_ns() - t0) / 1e6);
}

/* --- health (shard.h 'H') --------------------------------------------------- */

static int oldest_visit(void *ud, const char *id, const char *device, int64_t deadline) {
  (void)device;
  (void)deadline;
  memcpy(ud, id, FQ_ID_LEN + 1);
  return 1; /* the first in id order is the oldest */
}

/* The oldest unfinished command's creation time, inside a transaction. */
static int oldest_created(fq_shard_t *sh, int64_t *at, fq_err_t *err) {
  char id[FQ_ID_LEN + 1] = "";
  *at = 0;
  int rc = fq_store_active_scan(sh->store, oldest_visit, id, err);
  if (rc < 0) return rc; /* 1: stopped at the first */
  if (!id[0]) return 0;
  fq_cmdrec_t rec;
  rc = fq_store_cmd_get(sh->store, id, FQ_ID_LEN, &rec, err);
  if (rc == FQ_ENOTFOUND) return 0; /* a stale entry: retention removed it */
  if (rc) return rc;
  *at = rec.created;
  fq_cmdrec_free(&rec);
  return 0;
}

/* Answer an 'H' at once, between batches (no transaction is open): the
 * shard's own numbers and one read transaction, so that a health check
 * also proves the store can be read.  Frames: 'H', token (8 bytes). */
static void answer_health(fq_shard_t *sh, zmq_msg_t *f, int n) {
  if (n != 2 || zmq_msg_size(&f[1]) != 8) return;
  fq_shard_health_t h;
  memset(&h, 0, sizeof h);
  h.index = sh->o.index;
  h.answered = true;
  h.queued = fq_devq_count(sh->q);
  h.last_change_ms = sh->last_change_ms;
  h.refusing = sh->full;
  h.max_store = sh->o.max_store;
  /* What admit() asks for the next new command. */
  h.reserved = (h.queued + sh->nsched + 1) * RESERVE_PER_CMD + SUBMIT_COST;
  fq_err_t err;
  fq_err_clear(&err);
  int rc = fq_store_begin(sh->store, false, &err);
  if (rc == 0) {
    fq_store_usage_t u;
    rc = fq_store_usage(sh->store, &u, &err);
    if (rc == 0) {
      h.map_used = u.used;
      h.map_size = u.map_size;
      h.map_limit = u.map_size / 100 * HWM_PCT;
      rc = oldest_created(sh, &h.oldest_ms, &err);
    }
    fq_store_abort(sh->store);
  }
  h.read_ok = rc == 0;
  if (rc) snprintf(h.read_error, sizeof h.read_error, "%.150s", err.msg);
  if (h.max_store < h.map_size) h.max_store = h.map_size;
  h.at_ms = fq_now_ms();
  if (sh->cn) {
    bool serving = false;
    h.cluster = true;
    fq_clnode_owner(sh->cn, sh->o.index, h.owner, sizeof h.owner, &serving);
    h.served_here = sh->owner;
  }
  zmq_send(sh->sock, "H", 1, ZMQ_SNDMORE);
  zmq_send(sh->sock, zmq_msg_data(&f[1]), 8, ZMQ_SNDMORE);
  zmq_send(sh->sock, &h, sizeof h, 0);
}

/* The deadline a rebuild would give an in-flight command whose deadline
 * the queues no longer track (expire_due): its record's, which its
 * `active` row was written with.  Inside a read transaction. */
static int64_t cleared_deadline(void *ud, uint64_t num) {
  fq_shard_t *sh = ud;
  char id[FQ_ID_LEN + 1];
  fq_store_id_format(sh->o.index, num, id);
  fq_cmdrec_t rec;
  fq_err_t e;
  if (fq_store_cmd_get(sh->store, id, FQ_ID_LEN, &rec, &e) != 0) return 0; /* settled at start */
  int64_t d = rec.deadline;
  fq_cmdrec_free(&rec);
  return d;
}

/* At a clean stop: the dedupe table and the queues, for the next start
 * (store.h); a failure only costs that start its rebuild. */
static void save_snapshot(fq_shard_t *sh) {
  fq_err_t e;
  fq_err_clear(&e);
  fq_buf_t b;
  fq_buf_init(&b, (size_t)1 << 40);
  int rc = fq_store_begin(sh->store, false, &e);
  if (rc == 0) {
    rc = fq_devq_export(sh->q, &b, cleared_deadline, sh);
    fq_store_abort(sh->store);
    if (rc) fq_errf(&e, rc, "cannot write the queues out: %s", fq_strerror(rc));
  }
  if (rc == 0) rc = fq_store_save_snapshot(sh->store, b.data, b.len, &e);
  if (rc)
    fq_warn("shard", "shard %u: no restart snapshot for the next start: %s", sh->o.index, e.msg);
  fq_buf_free(&b);
}

/* --- cluster mode (docs/cluster.md) -----------------------------------------
 *
 * standby: follow the log into the copy (cluster_follow), publish the
 *          events of what was applied, answer requests with busy;
 * owner:   take over once the node holds the lease (cluster_take_over),
 *          serve like a single node with each batch in the log first
 *          (shard_commit), and step down (cluster_step_down) when the
 *          lease can no longer be acted on or the log refused a batch. */

#define EVENTS_DB 4 /* store.h's named database `events` in a write set */

static int open_dispatcher(fq_shard_t *sh, fq_err_t *err);

/* Each `events` put of an applied entry, published as the owner did. */
static int applied_event(void *ud, unsigned db, int op, const uint8_t *key, size_t klen,
                         const uint8_t *val, size_t vlen) {
  fq_shard_t *sh = ud;
  (void)key;
  (void)klen;
  if (db != EVENTS_DB || op != FQ_WS_PUT || !val) return 0;
  fq_event_t ev;
  fq_err_t e;
  if (fq_wire_event_unpack(val, vlen, &ev, &e) != 0) return 0; /* not ours to judge here */
  char topic[64 + 1 + 32];
  size_t tl = fq_wire_event_topic(&ev, topic, sizeof topic);
  if (sh->npev == sh->apev) {
    size_t n = sh->apev ? sh->apev * 2 : 256;
    pevent_t *p = realloc(sh->pev, n * sizeof *p);
    if (!p) return 0; /* an event less on this node's PUB; history has it */
    sh->pev = p;
    sh->apev = n;
  }
  pevent_t *pe = &sh->pev[sh->npev];
  pe->topic_off = sh->evbuf.len;
  pe->topic_len = tl;
  if (fq_buf_append(&sh->evbuf, topic, tl) != 0) return 0;
  pe->off = sh->evbuf.len;
  if (fq_buf_append(&sh->evbuf, val, vlen) != 0) return 0;
  pe->len = vlen;
  pe->state = -1; /* counted in the metrics by the owner only */
  pe->age_ms = 0;
  sh->npev++;
  return 0;
}

static int follow_apply(void *ud, uint64_t seq, const uint8_t *p, size_t n) {
  fq_shard_t *sh = ud;
  fq_err_t e;
  fq_err_clear(&e);
  int rc = fq_store_apply(sh->store, p, n, seq, &e);
  if (rc == FQ_STORE_EREPEAT) return 0;
  if (rc) {
    fq_error("shard", "shard %u: log entry %" PRIu64 " not applied: %s", sh->o.index, seq, e.msg);
    return rc;
  }
  sh->follow_applied++;
  fq_ws_head_t h;
  fq_ws_decode(p, n, &h, applied_event, sh, &e);
  return 0;
}

/* One step of the standby: apply what the log has after the copy's
 * applied entry, waiting at most wait_ms for the first. */
static void cluster_follow(fq_shard_t *sh, int64_t wait_ms) {
  int64_t now = fq_mono_ns();
  if (now < sh->follow_retry_at) return;
  fq_err_t e;
  fq_err_clear(&e);
  int rc = 0;
  if (!sh->fol) {
    uint64_t applied = 0;
    rc = fq_store_applied(sh->store, &applied, &e);
    if (rc == 0) rc = fq_cl_follow_open(sh->cl, sh->o.index, applied + 1, &sh->fol, &e);
  }
  size_t got = 0;
  if (rc == 0) rc = fq_cl_follow_next(sh->fol, 256, wait_ms, follow_apply, sh, &got, &e);
  if (sh->follow_applied) {
    fq_metrics_cluster_log(sh->o.index, 0, sh->follow_applied);
    sh->follow_applied = 0;
  }
  flush_batch(sh); /* the events of what was applied */
  if (rc) {
    fq_cl_follow_close(&sh->fol);
    if (rc != FQ_CL_EUNAVAIL)
      fq_error("shard", "shard %u: following the log: %s", sh->o.index, e.msg);
    sh->follow_retry_at = fq_mono_ns() + (rc == FQ_CL_EUNAVAIL ? 100 : 1000) * INT64_C(1000000);
  }
}

/* Stop serving: in-flight requests are abandoned (their commands were
 * `sent` in the log: the next owner settles them like a restart does), the
 * queues are dropped (the log and the copy have them), capture goes off
 * and the lease is given back. */
static void cluster_step_down(fq_shard_t *sh, const char *why) {
  fq_warn("shard", "cluster: shard %u: stepping down: %s", sh->o.index, why);
  fq_dispatch_destroy(&sh->disp);
  fq_err_t e;
  fq_err_clear(&e);
  fq_store_capture(sh->store, NULL, &e);
  fq_devq_destroy(&sh->q);
  sh->q = fq_devq_new();
  if (!sh->q) fq_fatal("shard %u: out of memory for the device queues", sh->o.index);
  sh->next_deadline = sh->next_sched = INT64_MAX;
  sh->nsched = 0;
  sh->owner = false;
  sh->lost = false;
  sh->handing_over = sh->handover_ready = false;
  sh->drain_until = 0;
  sh->recover_pending = false;
  fq_clnode_step_down(sh->cn, sh->o.index);
  fq_metrics_cluster_owned(sh->o.index, false);
  count_load(sh);
}

/* The node holds the lease: catch up (publishing what is applied), append
 * the takeover marker, then open the shard like a restart: queues rebuilt,
 * what was in flight at the old owner settled (each change in the log),
 * the dispatcher created. */
static void cluster_take_over(fq_shard_t *sh, const fq_cl_lease_t *l) {
  int64_t t0 = fq_mono_ns();
  fq_err_t e;
  fq_err_clear(&e);
  fq_cl_follow_close(&sh->fol);
  /* The tail first, with its events (fq_replica_take_over's own catch-up
   * finds nothing left then, or the last few entries). */
  uint64_t last = 0, applied = 0;
  if (fq_cl_last_seq(sh->cl, sh->o.index, &last, &e) == 0) {
    for (int i = 0; i < 1000; i++) {
      if (fq_store_applied(sh->store, &applied, &e) != 0 || applied >= last) break;
      cluster_follow(sh, 200);
      if (fq_mono_ns() < sh->follow_retry_at) break;
    }
    fq_cl_follow_close(&sh->fol);
  }
  fq_replica_free(&sh->rep);
  fq_replica_init(&sh->rep, sh->o.index, l->rev);
  uint64_t marker = 0;
  int rc = fq_replica_take_over(sh->store, &sh->ws, sh->cl, &sh->rep, &marker, &e);
  if (rc) {
    fq_error("shard", "cluster: shard %u: takeover failed: %s", sh->o.index, e.msg);
    cluster_step_down(sh, "the takeover failed");
    return;
  }
  sh->owner = true;
  sh->lost = false;
  int64_t t1 = fq_mono_ns();
  /* Settlement events wait in the batch buffers for the flush below. */
  rc = recover(sh, &e);
  if (rc == 0 && sh->o.dispatch) rc = open_dispatcher(sh, &e);
  if (rc) {
    fq_error("shard", "cluster: shard %u: cannot open the shard after the takeover: %s",
             sh->o.index, e.msg);
    sh->npev = 0;
    fq_buf_reset(&sh->evbuf);
    cluster_step_down(sh, "the takeover could not open the shard");
    return;
  }
  sh->drain_until = 0;
  sh->disp_retry_at = sh->nosubmit_until = sh->readonly_until = 0;
  fq_clnode_serving(sh->cn, sh->o.index, true); /* and the gauge */
  flush_batch(sh);
  announce_keys(sh);
  count_load(sh);
  fq_info("shard", "cluster: shard %u: owner now (lease revision %" PRIu64 ", marker at log "
          "entry %" PRIu64 "); caught up in %.0f ms, opened in %.0f ms", sh->o.index, l->rev,
          marker, (double)(t1 - t0) / 1e6, (double)(fq_mono_ns() - t1) / 1e6);
}

/* Between batches: become the owner, stay it, or step down. */
static void cluster_tick(fq_shard_t *sh) {
  fq_cl_lease_t l;
  bool may = fq_clnode_lease(sh->cn, sh->o.index, fq_mono_ns(), &l);
  if (sh->owner) {
    if (sh->lost) cluster_step_down(sh, "the log did not take a batch");
    else if (!may)
      cluster_step_down(sh, l.held ? "the lease was not renewed in time" : "the lease is gone");
    else if (sh->handover_ready)
      cluster_step_down(sh, "handed over to balance the shards across the nodes");
    else if (!sh->drain_until && !sh->disp && fq_clnode_handover(sh->cn, sh->o.index))
      cluster_step_down(sh, "handed over to balance the shards across the nodes (nothing in "
                            "flight: no dispatcher)");
    else if (!sh->handing_over && !sh->drain_until && fq_clnode_handover(sh->cn, sh->o.index)) {
      /* Drain first (nothing new starts, what is in flight is answered),
       * so that the next owner finds nothing in flight to settle. */
      sh->handing_over = true;
      sh->drain_until = fq_now_ms() + sh->o.drain_timeout_ms;
      fq_info("shard", "cluster: shard %u: handing over: draining what is in flight (up to "
              "%" PRId64 " ms)", sh->o.index, sh->o.drain_timeout_ms);
    }
    return;
  }
  if (may && !sh->stopping && !sh->drain_until) cluster_take_over(sh, &l);
}

static void *shard_main(void *arg) {
  fq_shard_t *sh = arg;
  size_t cap = sh->o.batch_max;
  zmq_msg_t(*msgs)[MAX_FRAMES + 2] = sh->msgs;
  int *counts = sh->counts;
  zmq_pollitem_t *items = sh->items;
  flush_batch(sh); /* the settlement events of the recovery in fq_shard_new */
  announce_keys(sh);
  count_load(sh); /* the gauges of what the store holds, before any batch */
  int carry = 0; /* requests a batch left for the next one, at msgs[0..carry) */
  while (!sh->stopping) {
    bool standby = false;
    if (sh->cn) {
      cluster_tick(sh);
      if ((standby = !sh->owner)) cluster_follow(sh, 0);
    }
    int64_t now = fq_now_ms();
    long timeout = -1;
    /* Deadlines are enforced by writing: not while nothing can be. */
    /* Scheduled commands too (release_due), except while stopping, when
     * none is released. */
    int64_t due = sh->next_deadline;
    if (!sh->drain_until && sh->next_sched < due) due = sh->next_sched;
    if (due < sh->readonly_until) due = sh->readonly_until;
    int64_t wake_at = due;
    if (prune_due(sh) < wake_at) wake_at = prune_due(sh);
    if (wake_at != INT64_MAX) timeout = wake_at <= now ? 0 : (long)(wake_at - now);
    if (timeout > 1000 || timeout < 0) timeout = 1000;
    items[0] = (zmq_pollitem_t){sh->sock, 0, ZMQ_POLLIN, 0};
    int nh = 0;
    /* While the dispatcher's changes cannot be written its timers and
     * kept answers wait for the retry (its sockets are still read). */
    bool disp_paused = sh->disp && now < sh->disp_retry_at;
    if (sh->disp) {
      nh = fq_dispatch_pollitems(sh->disp, items + 1, MAX_ITEMS - 1);
      long dt = disp_paused ? (long)(sh->disp_retry_at - now) : fq_dispatch_timeout_ms(sh->disp, now);
      if (dt >= 0 && dt < timeout) timeout = dt;
      if (sh->drain_until && timeout > sh->drain_until - now)
        timeout = sh->drain_until <= now ? 0 : (long)(sh->drain_until - now);
    }
    if (carry) timeout = 0;
    /* A standby looks at its log (and its lease) every STANDBY_POLL_MS. */
    if (standby && !carry) timeout = STANDBY_POLL_MS;
    /* A handover's drain is looked at every turn (nothing else may wake
     * the loop: a 'T' does, a handover has no message). */
    if (sh->handing_over && timeout > STANDBY_POLL_MS) timeout = STANDBY_POLL_MS;
    int64_t tp0 = TNOW();
    int prc = zmq_poll(items, 1 + nh, timeout);
    int64_t tp1 = TNOW();
    if (prc < 0 && errno != EINTR) break;
    int nmsgs = carry;
    int64_t t_rcvd = fq_mono_ns();
    while ((size_t)nmsgs < cap) {
      bool over;
      int n = fq_zmsg_recv(sh->sock, msgs[nmsgs], MAX_FRAMES + 2, ZMQ_DONTWAIT, &over);
      if (n < 0) break;
      if (n > 0 && zmq_msg_size(&msgs[nmsgs][0]) == 1 &&
          *(const char *)zmq_msg_data(&msgs[nmsgs][0]) == 'H') {
        /* Health is answered now, not behind the batch. */
        answer_health(sh, msgs[nmsgs], over ? 0 : n);
        for (int i = 0; i < n; i++) zmq_msg_close(&msgs[nmsgs][i]);
        continue;
      }
      sh->rcvd[nmsgs] = t_rcvd;
      counts[nmsgs++] = over ? -n : n; /* negative: frames past the limit were dropped */
    }
    now = fq_now_ms();
    if (sh->trace) {
      int64_t tp2 = thread_cpu_ns();
      sh->tr_poll += tp1 - tp0;
      sh->tr_recv += tp2 - tp1;
      sh->tr_loops++;
      static __thread int64_t last;
      int64_t w = fq_mono_ns();
      if (!last) last = w;
      if (w - last > 2000000000) {
        double nb = sh->tr_batches ? (double)sh->tr_batches : 1;
        fq_warn("shard", "trace %u: loops %" PRId64 " batches %" PRId64 " msgs/batch %.1f | us per batch: poll %.0f recv %.0f proc %.0f commit %.0f flush %.0f launch %.0f",
                sh->o.index, sh->tr_loops, sh->tr_batches, sh->tr_msgs / nb, sh->tr_poll / nb / 1000,
                sh->tr_recv / nb / 1000, sh->tr_proc / nb / 1000, sh->tr_commit / nb / 1000,
                sh->tr_flush / nb / 1000, sh->tr_launch / nb / 1000);
        sh->tr_poll = sh->tr_recv = sh->tr_proc = sh->tr_commit = sh->tr_flush = sh->tr_launch = 0;
        sh->tr_loops = sh->tr_batches = 0;
        sh->tr_msgs = 0;
        last = w;
      }
    }
    bool http_ready = false;
    for (int i = 1; i <= nh; i++)
      if (items[i].revents) http_ready = true;
    disp_paused = sh->disp && now < sh->disp_retry_at;
    int done = nmsgs;
    if (standby) {
      if (nmsgs) done = process_batch(sh, msgs, counts, nmsgs, items + 1, nh);
    } else if (nmsgs || now >= due || now >= prune_due(sh) || http_ready ||
        (sh->drain_until && now >= sh->drain_until) || sh->handing_over ||
        (sh->disp && !disp_paused && fq_dispatch_pending(sh->disp, now)))
      done = process_batch(sh, msgs, counts, nmsgs, items + 1, nh);
    for (int m = 0; m < done; m++)
      for (int i = 0; i < abs(counts[m]); i++) zmq_msg_close(&msgs[m][i]);
    /* What the batch left goes first in the next one, in order. */
    carry = nmsgs - done;
    for (int m = 0; m < carry; m++) {
      for (int i = 0; i < abs(counts[done + m]); i++) {
        zmq_msg_init(&msgs[m][i]);
        zmq_msg_move(&msgs[m][i], &msgs[done + m][i]);
        zmq_msg_close(&msgs[done + m][i]);
      }
      counts[m] = counts[done + m];
      sh->rcvd[m] = sh->rcvd[done + m];
    }
    grow_map(sh, fq_now_ms());
    endlog_tick(sh, fq_now_ms());
  }
  for (int m = 0; m < carry; m++)
    for (int i = 0; i < abs(counts[m]); i++) zmq_msg_close(&msgs[m][i]);
  /* Transfers end here, in the thread that owns the curl handles. */
  fq_dispatch_destroy(&sh->disp);
  /* A clean stop: nothing more is written, so the dedupe table can be
   * kept for the next start (store.h); a failure only costs that start
   * its rebuild. */
  if (sh->stopping && !sh->cn) save_snapshot(sh);
  fq_cl_follow_close(&sh->fol);
  zmq_send(sh->sock, "D", 1, 0);
  return NULL;
}

/* --- creation and start ------------------------------------------------------ */

static int alloc_loop(fq_shard_t *sh, fq_err_t *err) {
  sh->msgs = calloc(sh->o.batch_max, sizeof *sh->msgs);
  sh->counts = calloc(sh->o.batch_max, sizeof *sh->counts);
  sh->rcvd = calloc(sh->o.batch_max, sizeof *sh->rcvd);
  sh->items = calloc(MAX_ITEMS, sizeof *sh->items);
  sh->endl = calloc(ENDLOG_BATCH, sizeof *sh->endl);
  sh->keys = malloc(sizeof *sh->keys);
  if (!sh->msgs || !sh->counts || !sh->rcvd || !sh->items || !sh->keys || !sh->endl)
    return fq_errf(err, -ENOMEM, "out of memory for the batch buffers (batch_max %zu)",
                   sh->o.batch_max);
  return 0;
}

/* The shard's end of the ingress link: created, configured and connected
 * here, in the caller's thread, and never used for messages by it (see
 * shard.h).  inproc allows connecting before the ingress binds. */
static int open_socket(fq_shard_t *sh, fq_err_t *err) {
  /* Over inproc, libzmq bounds a direction by the sender's SNDHWM plus
   * the receiver's RCVHWM, and not at all when either is 0: a receive
   * mark of 1 makes the ingress's --shard-hwm the limit of requests
   * waiting here (with 0 it had no effect); replies and events going
   * back stay unbounded (both ends 0). */
  int hwm = 0, rcvhwm = 1, linger = 1000;
  sh->sock = zmq_socket(sh->o.zmq_ctx, ZMQ_PAIR);
  if (!sh->sock ||
      zmq_setsockopt(sh->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(sh->sock, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm) != 0 ||
      zmq_setsockopt(sh->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
      zmq_connect(sh->sock, sh->endpoint) != 0)
    return fq_errf(err, FQ_EINTERNAL, "cannot set up the socket to the ingress (%s): %s",
                   sh->endpoint, zmq_strerror(zmq_errno()));
  return 0;
}

/* Create the dispatcher (its curl multi handle and the socket to the auth
 * thread, handed over like sh->sock) and give it every device with queued
 * commands to look at once the thread runs. */
static int open_dispatcher(fq_shard_t *sh, fq_err_t *err) {
  fq_dispatch_env_t env = {.shard = sh,
                           .shard_index = sh->o.index,
                           .store = sh->store,
                           .q = &sh->q,
                           .transition = dispatch_transition};
  fq_err_t e;
  fq_err_clear(&e);
  sh->disp = fq_dispatch_new(sh->o.dispatch, &env, &e);
  if (!sh->disp) return fq_errf(err, e.code, "cannot create the dispatcher: %s", e.msg);
  int rc = fq_store_begin(sh->store, false, &e);
  if (rc) return fq_errf(err, rc, "cannot read the queues for the dispatcher: %s", e.msg);
  fq_dispatch_kick_all(sh->disp);
  fq_store_abort(sh->store);
  return 0;
}

/* Retention asks before it removes a terminal command: the dispatcher may
 * still hold it as a device's current command (settled by the shard while
 * a timer of the dispatcher runs) and read it again. */
static bool shard_refers(void *ud, const char *device, uint64_t num) {
  fq_shard_t *sh = ud;
  return sh->disp && fq_dispatch_refers(sh->disp, device, num);
}

fq_shard_t *fq_shard_new(const fq_shard_opts_t *opts, fq_err_t *err) {
  fq_shard_t *sh = calloc(1, sizeof *sh);
  if (!sh) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  sh->o = *opts;
  sh->trace = getenv("FQ_TRACE") != NULL;
  if (!sh->o.batch_max) sh->o.batch_max = 4096;
  if (sh->o.max_store < sh->o.map_size) sh->o.max_store = sh->o.map_size;
  snprintf(sh->endpoint, sizeof sh->endpoint, "inproc://fq-shard-%u", opts->index);
  snprintf(sh->dir, sizeof sh->dir, "%s/shard-%u", opts->data_dir, opts->index);
  fq_buf_init(&sh->replies, 0);
  fq_buf_init(&sh->evbuf, 0);
  fq_buf_init(&sh->scratch, 0);
  fq_buf_init(&sh->wire, 0);
  fq_hmap_init(&sh->accts, sizeof(acct_name_t), 50);
  sh->next_deadline = INT64_MAX;
  sh->next_sched = INT64_MAX;
  sh->last_change_ms = fq_now_ms();
  fq_err_t e;
  fq_err_clear(&e);
  int64_t t0 = fq_mono_ns();
  sh->store = fq_store_open(sh->dir, opts->index, opts->map_size, err);
  if (!sh->store) goto fail;
  if (alloc_loop(sh, err) != 0 || open_socket(sh, err) != 0) goto fail;
  fq_ws_init(&sh->ws, WS_CAP);
  fq_replica_init(&sh->rep, opts->index, 0);
  if (opts->cluster) {
    /* A standby until the lease comes: nothing is settled or dispatched,
     * the copy is written only by the log (cluster_follow). */
    sh->cn = opts->cluster;
    if (fq_clnode_connect(sh->cn, &sh->cl, &e) != 0) {
      fq_errf(err, e.code, "shard %u: cannot connect to the cluster: %s", opts->index, e.msg);
      goto fail;
    }
    uint64_t applied = 0;
    if (fq_store_applied(sh->store, &applied, &e) != 0) {
      fq_errf(err, e.code, "shard %u: %s", opts->index, e.msg);
      goto fail;
    }
    fq_store_stats_t st;
    if (applied == 0 && fq_store_begin(sh->store, false, &e) == 0) {
      int src = fq_store_stats(sh->store, &st, &e);
      fq_store_abort(sh->store);
      if (src == 0 && (st.commands || st.queued)) {
        fq_errf(err, FQ_ECONFIG, "shard %u: this data directory holds commands of a single "
                "node (never in a cluster log): a cluster node starts with an empty --data "
                "directory (docs/cluster.md)", opts->index);
        goto fail;
      }
    }
    if (!(sh->q = fq_devq_new())) {
      fq_errf(err, -ENOMEM, "out of memory");
      goto fail;
    }
    fq_info("shard", "cluster: shard %u: standby, the copy holds log entries up to %" PRIu64,
            opts->index, applied);
  } else if (recover(sh, &e) != 0) {
    fq_errf(err, e.code, "recovery failed: %s", e.msg);
    goto fail;
  }
  fq_retention_opts_t ro = {.retention_ms = opts->retention_ms,
                            .dedupe_window_ms = opts->dedupe_window_ms,
                            .busy = shard_refers,
                            .busy_ud = sh};
  if (!(sh->ret = fq_retention_new(sh->store, &ro, fq_now_ms(), err))) goto fail;
  if (!sh->cn && sh->o.dispatch && open_dispatcher(sh, err) != 0) goto fail;
  /* The rebuild is done: give back what it walked.  The store's pages it
   * read stay in the page cache but leave this process (store.h), and the
   * memory it freed (its collections, the records it decoded) goes back
   * to the system instead of staying in this thread's malloc arena. */
  fq_store_release_pages(sh->store);
  fq_heap_trim();
  fq_info("shard", "shard %u: opened in %.0f ms", opts->index, (double)(fq_mono_ns() - t0) / 1e6);
  return sh;
fail:
  fq_shard_destroy(&sh);
  return NULL;
}

int fq_shard_start(fq_shard_t *sh) {
  if (sh->started) return -EALREADY;
  /* pthread_create is the full memory barrier that hands the socket, the
   * store and the dispatcher over to the thread. */
  int rc = pthread_create(&sh->thread, NULL, shard_main, sh);
  if (rc) return -rc;
  char name[16];
  snprintf(name, sizeof name, "fq-shard-%u", sh->o.index);
  pthread_setname_np(sh->thread, name);
  sh->started = true;
  return 0;
}

void fq_shard_destroy(fq_shard_t **shp) {
  if (!shp || !*shp) return;
  fq_shard_t *sh = *shp;
  if (sh->started) pthread_join(sh->thread, NULL);
  fq_dispatch_destroy(&sh->disp); /* a shard that never started still has it */
  if (sh->sock) zmq_close(sh->sock);
  fq_retention_destroy(&sh->ret);
  fq_cl_follow_close(&sh->fol);
  fq_cl_close(&sh->cl);
  fq_replica_free(&sh->rep);
  fq_ws_free(&sh->ws);
  fq_store_destroy(&sh->store);
  fq_devq_destroy(&sh->q);
  free(sh->pend);
  free(sh->pev);
  free(sh->endl);
  free(sh->msgs);
  free(sh->counts);
  free(sh->rcvd);
  free(sh->items);
  free(sh->keys);
  fq_buf_free(&sh->replies);
  fq_buf_free(&sh->evbuf);
  fq_buf_free(&sh->scratch);
  fq_buf_free(&sh->wire);
  fq_hmap_free(&sh->accts);
  free(sh);
  *shp = NULL;
}
