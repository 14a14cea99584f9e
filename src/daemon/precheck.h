/*
 * The fleet_status pre-check of one shard's dispatcher (issue 16).
 *
 * Before the first signed-capable command to a VIN, again after a pairing
 * fault (fq_precheck_forget) and once its answer is older than
 * --fleet-status-ttl, the dispatcher asks POST /api/1/vehicles/fleet_status
 * which of its cars have the fleet key paired and which need signed
 * commands.  An unpaired car that needs them fails at once (no wake_up, no
 * billed command); a car that does not need them goes straight to REST.
 *
 * The VINs of one account that need asking are sent together, at most
 * FQ_FS_BATCH_MAX per request and one request per account out at a time:
 * VINs that come up while one is out go in the next, so a burst of first
 * commands costs a few requests, not one per car.  The answers are kept in
 * memory per VIN (the shard owns its VINs).
 *
 * Never worse than without it: when fleet_status fails (transport, 5xx,
 * 404 of an API without it, 429, 401/403, anything unreadable) the VINs
 * waiting on it are dispatched as before, and the account's pre-check
 * backs off (5 s doubling, at most the TTL; a 404 waits the whole TTL)
 * during which its commands go out as before (counted from the end of the
 * account's park when a 429 or RateLimit pacing parked it).  A 401/403 is left to the
 * command's own request, which goes through the token and scope handling.
 *
 * This module keeps the state and reads the answers; dispatch.c sends the
 * requests through its transport (curl multi, never blocking the shard
 * thread) and acts on the verdicts.  Owned by the shard thread.
 */
#ifndef FQ_PRECHECK_H
#define FQ_PRECHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

typedef struct fq_precheck fq_precheck_t;
typedef struct fq_precheck_batch fq_precheck_batch_t;

/* An unpaired verdict is trusted at most this long (within the TTL): the
 * commands queued behind a failed one share it, and a car paired in the
 * Tesla app meanwhile is seen within a minute. */
#define FQ_PRECHECK_UNPAIRED_KEEP_MS 60000

/* The first back-off after a failed fleet_status (doubling, at most the
 * TTL and FQ_PRECHECK_BACKOFF_MAX_MS). */
#define FQ_PRECHECK_BACKOFF_MS 5000
#define FQ_PRECHECK_BACKOFF_MAX_MS 600000

/* kick(owner, device): look at the device again (its answer came). */
typedef void (*fq_precheck_kick_fn)(void *owner, const char *device);

/* ttl_ms > 0.  NULL when out of memory. */
fq_precheck_t *fq_precheck_new(int64_t ttl_ms, fq_precheck_kick_fn kick, void *owner);
void fq_precheck_destroy(fq_precheck_t **pp);

enum {
  FQ_PC_GO = 0,    /* dispatch; *signing says how (-1: as before) */
  FQ_PC_WAIT,      /* asked (or being asked): device is kicked when the answer comes */
  FQ_PC_UNPAIRED,  /* the fleet key is not paired and the car needs signed commands */
};

/* The verdict for a command of account to vin (device is the dispatcher's
 * name for it, kicked later on FQ_PC_WAIT).  *signing: 1 the car needs
 * signed commands, 0 it takes REST commands, -1 not known. */
int fq_precheck_look(fq_precheck_t *p, const char *account, const char *vin, const char *device,
                     int64_t now_ms, int *signing);

/* A pairing fault on vin (the car refused our key): ask again before its
 * next command. */
void fq_precheck_forget(fq_precheck_t *p, const char *vin);

/* The car itself said how it takes commands (1: a 403 "Vehicle Command
 * Protocol required", 0: a 422 on signed_command): that wins over the
 * cached fleet_status answer until the next one. */
void fq_precheck_note_signing(fq_precheck_t *p, const char *vin, int signing);

/* Launching: the next batch whose request may leave now, with its account
 * and JSON body (valid until the batch's answer), or NULL.  The caller
 * sends it and hands its answer to fq_precheck_answer(), or calls
 * fq_precheck_not_sent(). */
fq_precheck_batch_t *fq_precheck_next(fq_precheck_t *p, int64_t now_ms, const char **account,
                                      const void **body, size_t *len);
void fq_precheck_not_sent(fq_precheck_t *p, fq_precheck_batch_t *b, int64_t now_ms,
                          const char *why);
/* Read the answer: fill the cache (or back off) and kick the devices that
 * waited.  parked_until_ms: until when the account may not send (the
 * caller parked it after this answer's 429 or RateLimit headers, or it
 * was parked already), 0 when it may: a back-off counts from then. */
void fq_precheck_answer(fq_precheck_t *p, fq_precheck_batch_t *b, const fq_http_resp_t *resp,
                        int64_t now_ms, int64_t parked_until_ms);

/* The owner given to fq_precheck_new (for transport callbacks). */
void *fq_precheck_owner(const fq_precheck_batch_t *b);
fq_precheck_t *fq_precheck_of(const fq_precheck_batch_t *b);
const char *fq_precheck_account(const fq_precheck_batch_t *b);

typedef struct fq_precheck_stats {
  uint64_t requests;          /* fleet_status requests sent */
  uint64_t vins_asked;        /* VINs in them */
  uint64_t failures;          /* requests that failed (fell back) */
  uint64_t unpaired_failed;   /* commands failed by an unpaired verdict */
} fq_precheck_stats_t;
void fq_precheck_stats(const fq_precheck_t *p, fq_precheck_stats_t *st);
void fq_precheck_count_unpaired(fq_precheck_t *p);

#endif
