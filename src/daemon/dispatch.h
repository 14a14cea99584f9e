/*
 * The dispatcher of one shard: drives every queued command to a terminal
 * state through Fleet API (see DESIGN.md, "Status").  It owns the shard's
 * libcurl multi handle (fq_http_t), its vehicle sessions (vcp), the device
 * dispatch states (in flight, waking, parked) and the rate-limit buckets.
 *
 * It lives inside the shard's loop and follows its group commit:
 *   - fq_dispatch_step() runs inside the shard's write transaction: it
 *     applies HTTP completions, due timers and queued kicks, and records
 *     every state change (through env.transition) and every session change
 *     in the same transaction;
 *   - fq_dispatch_launch() runs after the commit: only then do the requests
 *     prepared in the transaction leave.  A command is therefore durably
 *     `dispatching` (or its session counter durably advanced) before any
 *     byte of it reaches Fleet API, which is what lets a restart settle
 *     in-flight commands safely.
 * One command per device is in flight at a time.  Owned by the shard
 * thread; nothing here is thread safe.
 *
 * Time: the dispatcher reads no clock of its own for its timers and
 * deadlines; it acts on the now_ms (Unix ms) its caller passes to step,
 * launch, timeout_ms and pending.  The one exception is the per-account
 * limit shared by all shards (account_rl), which runs on the monotonic
 * clock.
 */
#ifndef FQ_DISPATCH_H
#define FQ_DISPATCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#include "accounts.h"
#include "auth.h"
#include "devq.h"
#include "http.h"
#include "ratelimit.h"
#include "fleetq/error.h"
#include "store.h"
#include "vcp.h"

typedef struct fq_dispatch fq_dispatch_t;

/* How the dispatcher reaches Fleet API.  By default (opts.transport NULL)
 * it is a libcurl multi client (fq_http_t) that the dispatcher creates and
 * owns, whose descriptor fq_dispatch_pollitems() hands to the shard's poll.
 * A test passes its own table to drive the state machine without a
 * network: it sees every request the dispatcher makes and chooses every
 * answer.  The functions run on the shard thread only; the dispatcher
 * makes one call through the table per request, per step and per
 * fq_dispatch_pending(). */
typedef struct fq_dispatch_transport {
  void *ud;                  /* passed to every function below */
  /* Start a request, with fq_http_request()'s contract: 0 with *id set
   * (never 0), then cb runs exactly once, from a later perform(); or an
   * error and cb never runs (FQ_EBUSY: the dispatcher tries again shortly;
   * -ENOMEM: likewise; anything else fails the command with err's text).
   * req and what it points to are lent for the call only. */
  int (*request)(void *ud, const fq_http_req_t *req, fq_http_cb cb, void *cb_ud, uint64_t *id,
                 fq_err_t *err);
  /* Run the callbacks of finished requests, as fq_http_perform() (items/n
   * are the poll items of the step).  Called inside fq_dispatch_step(),
   * so the callbacks' state changes land in the open transaction. */
  int (*perform)(void *ud, const zmq_pollitem_t *items, int n, fq_err_t *err);
  /* Requests started whose callback has not run yet. */
  unsigned (*inflight)(void *ud);
} fq_dispatch_transport_t;

/* Account limits are per account across every shard (Tesla counts per
 * account and app), so their tables are the one piece of mutable state
 * the shards share, behind a mutex taken once per command start:
 *   rl    the --account-rate buckets (monotonic ms), or NULL: no limit;
 *   park  accounts parked after a 429 (Retry-After, else RateLimit-Reset)
 *         or slowed down when RateLimit-Remaining runs low (below 10 % of
 *         RateLimit-Limit: the requests left are spread over the time to
 *         the reset); keyed by account id, times in the dispatchers' now_ms
 *         (Unix ms).  NULL: no account parking. */
typedef struct fq_shared_rl {
  pthread_mutex_t mu;
  fq_rl_t *rl;
  fq_rl_t *park;
} fq_shared_rl_t;

typedef struct fq_dispatch_opts {
  const fq_vcp_key_t *key;     /* fleet key, or NULL: vehicle commands then fail */
  fq_accounts_t *accounts;     /* shared store, or NULL: nothing is dispatched */
  void *zmq_ctx;
  fq_auth_t *auth;             /* shared, borrowed: account generation and refresh
                                  failures; NULL: none (the generation stays 0) */
  const char *auth_refresh_ep; /* auth thread's PULL endpoint, or NULL */
  const char *ca_file;         /* extra CA for Fleet API TLS, or NULL */
  const char *pairing_domain;  /* for https://tesla.com/_ak/<domain> */
  const char *allow_host;      /* extra host[:port] a 421 may switch to */
  int64_t wake_poll_ms;        /* [10000] */
  int64_t retry_backoff_ms;    /* [1000] */
  int64_t http_timeout_ms;     /* [10000] */
  int64_t wake_timeout_ms;     /* [120000] give up waking after this long */
  int wake_max;                /* [3] most wake_up requests per command; the
                                  next one needed fails it instead */
  int64_t fleet_status_ttl_ms; /* fleet_status pre-check (precheck.h): how long an
                                  answer is trusted; 0 = no pre-check */
  double device_rate, device_burst;   /* 0 = no per-device limit */
  fq_shared_rl_t *account_rl;  /* per-account tables shared by all shards, or NULL:
                                  no account rate, and the dispatcher parks
                                  accounts in a table of its own (one shard) */
  const fq_dispatch_transport_t *transport; /* NULL: the real HTTP client (ca_file and
                                               http_timeout_ms apply to it); else copied */
} fq_dispatch_opts_t;

/* What the dispatcher needs from its shard. */
typedef struct fq_dispatch_env {
  void *shard;
  unsigned shard_index;
  fq_store_t *store;
  fq_devq_t **q;  /* the shard may rebuild its queues: always read through */
  /* Record a state change of rec (record, transition list, event, queue
   * membership when terminal) inside the open transaction.  put false:
   * everything but writing the record, which the caller writes later in
   * the same transaction. */
  int (*transition)(void *shard, fq_cmdrec_t *rec, int state, const char *reason, int error,
                    int64_t now, bool put, fq_err_t *err);
} fq_dispatch_env_t;

/* Create a dispatcher: its HTTP client (curl multi handle), tables and,
 * with auth_refresh_ep and zmq_ctx, its PUSH socket to the auth thread
 * (created and connected here; the caller hands it to the thread that will
 * own the dispatcher across a full memory barrier such as pthread_create,
 * see shard.h).  opts' pointers are borrowed and must outlive it; env is
 * copied.  NULL with err on failure (out of memory, a bad ca_file, a
 * socket that cannot be created or connected). */
fq_dispatch_t *fq_dispatch_new(const fq_dispatch_opts_t *opts, const fq_dispatch_env_t *env,
                               fq_err_t *err);
/* Aborts every transfer; commands in flight stay as they are in the store
 * and are settled by the next start (after fq_dispatch_drain() with final,
 * none is left).  NULLs *dp; accepts NULL. */
void fq_dispatch_destroy(fq_dispatch_t **dp);

/* Ask for a look at a device's queue head in the next step (after a
 * submit, a cancel, a restart). */
void fq_dispatch_kick(fq_dispatch_t *d, const char *device);
/* Whether command num is the one the dispatcher works on for device (it
 * will read its record again): retention keeps such a record even once
 * it is terminal. */
bool fq_dispatch_refers(const fq_dispatch_t *d, const char *device, uint64_t num);
/* Kick every device that has queued commands (start-up). */
void fq_dispatch_kick_all(fq_dispatch_t *d);

/* Sockets the shard must poll for the dispatcher (appended to items;
 * returns how many, at most max), and how long it may sleep (ms, -1 = no
 * limit). */
int fq_dispatch_pollitems(fq_dispatch_t *d, zmq_pollitem_t *items, int max);
long fq_dispatch_timeout_ms(fq_dispatch_t *d, int64_t now_ms);

/* True when the next step has something to do even without new requests. */
bool fq_dispatch_pending(fq_dispatch_t *d, int64_t now_ms);

/* Inside the shard's write transaction: completions of the sockets in
 * items[0..n) (as polled), due timers, kicks.  Errors are storage errors
 * (the transaction must then be aborted). */
int fq_dispatch_step(fq_dispatch_t *d, const zmq_pollitem_t *items, int n, int64_t now_ms,
                     fq_err_t *err);

/* After the commit: send what the step prepared.  now_ms is the caller's
 * clock (as for fq_dispatch_step); a request that could not be started is
 * tried again, or failed, by a timer counted from it.
 *
 * After an abort call fq_dispatch_rollback() instead (then launch, which
 * has nothing to send): the prepared requests are dropped and every
 * device the transaction touched is put back as it was, so memory agrees
 * with the store again.  A request that was out stays out: the answer
 * that came for it (kept until a transaction acting on it commits) is
 * acted on again in the next step.  So a request leaves once and its
 * outcome is recorded once, however many transactions fail in between;
 * a command the store holds as started is never started again.  After a
 * rollback the next steps do less work each (half of the failed one's,
 * doubling with every commit), so that changes too large for the room
 * left go through in smaller transactions. */
void fq_dispatch_launch(fq_dispatch_t *d, int64_t now_ms);
void fq_dispatch_rollback(fq_dispatch_t *d);

/* Outside any transaction, when the shard cannot write (storage full or
 * failing) and runs no step: take the answers that arrived (items/n as
 * for fq_dispatch_step) and keep them, in order, for the next step, so
 * that transfers are not left to time out meanwhile. */
void fq_dispatch_collect(fq_dispatch_t *d, const zmq_pollitem_t *items, int n);

/* Stopping (SIGTERM), inside the shard's write transaction, after
 * fq_dispatch_step(): from the first call on, no command starts and no
 * request leaves for a new attempt (a retry, a resync, a wake-up, a
 * handshake).  Every command that has no request of its own out goes back
 * to `queued` with its attempts unchanged, to be sent by the next start
 * (expired instead when its deadline has passed); a command whose request
 * is out keeps waiting for its answer, which is recorded as usual.  Call
 * it after every step while stopping; with final (the drain time is up)
 * the commands still waiting are settled too: `unknown` for a
 * non-idempotent one (it may have reached the car), `queued` for an
 * idempotent one (sent again after the restart).  Errors are storage
 * errors (the transaction must then be aborted). */
int fq_dispatch_drain(fq_dispatch_t *d, int64_t now_ms, bool final, fq_err_t *err);
/* True once fq_dispatch_drain() was called and, at its last call, no
 * command was still waiting for an answer. */
bool fq_dispatch_drained(const fq_dispatch_t *d);

/* Counters for stats. */
typedef struct fq_dispatch_stats {
  uint64_t sent, succeeded, failed, unknown, retries, wakes, handshakes;
  unsigned inflight;
} fq_dispatch_stats_t;
void fq_dispatch_stats(const fq_dispatch_t *d, fq_dispatch_stats_t *st);

#endif
