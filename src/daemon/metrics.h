/*
 * fleetqd's metrics: counters, gauges and histograms that the ingress, the
 * shards, the dispatchers and the auth thread update, and a small HTTP
 * server (libmicrohttpd, one thread of its own) that renders them on
 * `GET /metrics` in the Prometheus text exposition format 0.0.4
 * (`fleetqd --metrics HOST:PORT`; docs/operations.md lists every metric).
 *
 * Thread rules: the update functions below may be called from any thread
 * at any time, also when no server runs (they then only count).  Each is
 * a few relaxed C11 atomic operations on process-wide storage, never a
 * lock, a system call or an allocation, so that a scrape can never slow a
 * shard down: the HTTP thread only reads.  A scrape is therefore not one
 * instant's snapshot: a counter may move while others are read; every
 * counter read is monotonic, and a histogram's _count is the sum of the
 * buckets it printed, so each one is consistent in itself.
 *
 * Why process-wide storage rather than a handle passed around: the hooks
 * sit deep in modules (one line each) that should not grow a parameter
 * for it, and one process runs one daemon.  Unit tests may reset it
 * (fq_metrics_reset).
 *
 * Nothing secret ever becomes a label: labels are error and state names,
 * shard numbers, endpoint kinds, HTTP statuses and account ids (which
 * the operator chose; tokens are never passed in here).
 */
#ifndef FQ_METRICS_H
#define FQ_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "fleetq/error.h"

/* Shards the per-shard gauges hold (the configuration's limit). */
#define FQ_METRICS_MAX_SHARDS 64
/* Accounts fleetq_billable_requests_total tells apart; the ones past it
 * are counted under account="_other" (docs/operations.md). */
#define FQ_METRICS_MAX_ACCOUNTS 4096

/* --- the server ------------------------------------------------------------ */

typedef struct fq_metrics fq_metrics_t;

/* Parse a --metrics value: "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT".
 * HOST is a numeric IPv4 / IPv6 address or "localhost"; without one the
 * server binds 127.0.0.1 (loopback unless the operator names another
 * address).  PORT is 1..65535.  Fills *addr / *len.  0 or FQ_ECONFIG with
 * err saying what is wrong. */
int fq_metrics_parse_addr(const char *spec, struct sockaddr_storage *addr, socklen_t *len,
                          fq_err_t *err);

/* Bind spec (see fq_metrics_parse_addr) and start the HTTP thread serving
 * GET /metrics for nshards shards.  Call after the signal mask is set
 * (the thread inherits it).  Returns NULL with err filled: FQ_ECONFIG for
 * a bad spec, -errno for a socket that cannot be bound ("address already
 * in use" names the address), FQ_EINTERNAL when the server cannot start.
 * Free with fq_metrics_destroy. */
fq_metrics_t *fq_metrics_start(const char *spec, unsigned nshards, fq_err_t *err);

/* Stop the server thread and free it.  Accepts NULL; NULLs the pointer. */
void fq_metrics_destroy(fq_metrics_t **mp);

/* The whole exposition for nshards shards, as the server sends it:
 * malloc'ed, NUL-terminated, *len without the NUL; NULL when out of
 * memory.  The caller frees it.  (For tests and the server.) */
char *fq_metrics_render(unsigned nshards, size_t *len);

/* Zero every counter (unit tests). */
void fq_metrics_reset(void);

/* --- updates (any thread; relaxed atomics) -------------------------------------- */

/* A submit was answered.  code: FQ_METRICS_ACCEPTED, FQ_METRICS_DUPLICATE
 * or the error code it was refused with (label: its wire name). */
#define FQ_METRICS_ACCEPTED 0
#define FQ_METRICS_DUPLICATE 1
void fq_metrics_submit(int code);

/* Submit received -> ack sent, for an accepted submit (nanoseconds). */
void fq_metrics_ack_ns(int64_t ns);

/* A shard's batch: `requests` requests handled by one group commit (0:
 * a batch of timers or dispatch answers only, counted in busy_ns alone),
 * the processing before the commit and the commit itself, and the wall
 * time of the whole batch (processing, commit, answers sent), all ns. */
void fq_metrics_batch(unsigned shard, uint64_t requests, int64_t process_ns, int64_t commit_ns,
                      int64_t busy_ns);

/* A command reached terminal state `state` (FQ_ST_*), age_ms after it was
 * accepted (fleetq_commands_total, fleetq_dispatch_seconds). */
void fq_metrics_terminal(int state, int64_t age_ms);

/* Where a dispatched command waits, in microseconds: acceptance -> its
 * first request leaving; a request's round trip; the answer that ended
 * it -> its terminal state committed. */
void fq_metrics_dispatch_send_wait_us(int64_t us);
void fq_metrics_dispatch_request_us(int64_t us);
void fq_metrics_dispatch_settle_wait_us(int64_t us);

/* Shard gauges: active commands held (queued + in flight) and requests
 * out at Fleet API; bytes in use in the store and its map size. */
void fq_metrics_shard_load(unsigned shard, uint64_t active, uint64_t in_flight);
void fq_metrics_shard_store(unsigned shard, uint64_t used, uint64_t map_size);
/* Commands the shard holds for a later time (state scheduled). */
void fq_metrics_shard_scheduled(unsigned shard, uint64_t scheduled);
/* Cluster mode (docs/cluster.md): the node serves the shard or not (the
 * gauges appear once a node is in cluster mode), and log entries appended
 * as owner / applied as follower. */
void fq_metrics_cluster_owned(unsigned shard, bool owned);
void fq_metrics_cluster_log(unsigned shard, uint64_t appended, uint64_t applied);

/* Fleet API endpoint kinds (label `kind`). */
typedef enum fq_metrics_kind {
  FQ_MK_SIGNED_COMMAND = 0,  /* POST .../signed_command (commands and session info) */
  FQ_MK_COMMAND,             /* POST .../command/{name} */
  FQ_MK_WAKE_UP,             /* POST .../wake_up */
  FQ_MK_VEHICLE,             /* GET .../vehicles/{vin} (wake-up polls) */
  FQ_MK_ENERGY,              /* energy site commands */
  FQ_MK_TOKEN,               /* the OAuth token endpoint */
  FQ_MK_FLEET_STATUS,        /* POST .../vehicles/fleet_status (the pre-check) */
  FQ_MK_COUNT_
} fq_metrics_kind_t;

/* One Fleet API (or token endpoint) request ended with an answer of HTTP
 * status `status`, or with no answer at all (status 0: not sent, timed
 * out, connection lost).  account (may be NULL) is the account it was
 * made for: an answer below 500 to a Fleet API request (not the token
 * endpoint) is billable and counted per account too; a wake_up answer
 * also counts in fleetq_wakeups_total. */
void fq_metrics_fleet_api(fq_metrics_kind_t kind, long status, const char *account);

/* Token refresh outcomes (label `result`). */
typedef enum fq_metrics_refresh {
  FQ_MR_OK = 0,        /* new tokens stored */
  FQ_MR_UNREACHABLE,   /* the token endpoint was not reached */
  FQ_MR_LOST,          /* the reply was lost (timeout, cut connection) */
  FQ_MR_UNAVAILABLE,   /* 429 / 5xx: tried again later */
  FQ_MR_UNREADABLE,    /* an answer that could not be read */
  FQ_MR_REJECTED,      /* refused: the account needs the user */
  FQ_MR_STORE_FAILED,  /* the new tokens could not be stored */
  FQ_MR_COUNT_
} fq_metrics_refresh_t;
void fq_metrics_token_refresh(fq_metrics_refresh_t result);

/* n events were handed to the PUB socket. */
void fq_metrics_events(uint64_t n);
/* Campaigns (campaign.h): how many are in each state (receiving,
 * scheduled, running, done, aborted), and device commands created. */
void fq_metrics_campaigns(const uint64_t counts[5]);
void fq_metrics_campaign_commands(uint64_t n);

#endif
