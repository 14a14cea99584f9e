/*
 * The auth thread: the one writer of the account store.  It answers the
 * admin requests that the ingress forwards (account add / list / get /
 * remove), refreshes OAuth tokens with single flight per account (on a
 * shard's request after a 401, and proactively about five minutes before
 * expiry), and stores every rotated refresh token durably before the new
 * access token can be used.
 *
 * Messaging (inproc ZeroMQ, like the shards).  fq_auth_new() binds both
 * sockets itself, at fixed endpoints (one auth side per ZeroMQ context),
 * so the ingress and the shards only connect, in any order (inproc allows
 * connecting before the bind):
 *   ingress <-> auth   PAIR at FQ_AUTH_ADMIN_ENDPOINT: the shard framing
 *                      of shard.h ('Q' envelope... body -> 'R' envelope...
 *                      reply; 'T' -> 'D'); bodies are `op: "admin"`
 *                      requests (see proto/wire-protocol.md and
 *                      docs/accounts.md).  The auth thread decodes them
 *                      itself, strictly; the ingress only forwards.  On
 *                      'T' it lets running token requests finish (their
 *                      answers may carry a rotated refresh token that
 *                      exists nowhere else; at most ~16 s) and then sends
 *                      'D'.
 *   shards  -> auth    PUSH to FQ_AUTH_REFRESH_ENDPOINT: one frame
 *                      "R<account id>" asking for a refresh.  No reply: a
 *                      shard learns the outcome by polling
 *                      fq_auth_generation() of the handle it was lent and
 *                      re-reading the account.
 *
 * Admin actions: account_add, account_list, account_get, account_remove,
 * account_retry (keys and replies in docs/accounts.md and
 * proto/wire-protocol.md).  Admin is loopback-only by
 * construction: the ingress cannot see a peer's address cheaply, and
 * fleetqd refuses to bind a non-loopback address until CURVE client
 * authentication lands, so every client that reaches the ingress is on
 * this host.  allow_remote_admin is kept for that day and is not used yet.
 *
 * Refresh policy: every FQ_AUTH_SCAN_INTERVAL_MS the thread lists the
 * accounts (no decryption needed) and refreshes those whose access token
 * expires within FQ_OAUTH_REFRESH_MARGIN_S; a shard's request (after a
 * 401) and an account_add of an almost expired token start one at once.
 * Single flight per account: a request for an account whose refresh is
 * running (or waiting for its retry) is merged into it; one arriving after
 * it finished starts a new one (a request does not say which token the
 * asker held, and a skipped refresh would fail commands).
 * 429 / 5xx / endpoint not reached: retry with backoff (5 s doubling to
 * 5 min, at least Retry-After).  A lost or unreadable reply: one retry
 * with the same refresh token.  Rejected: the failure is recorded and the
 * account is not retried automatically (at most every 10 minutes on a
 * shard's request) until account_add gives it new tokens.  Token URL:
 * opts.token_url when set; else base_url + "/oauth2/v3/token" when the
 * account's base_url is not a Tesla host (the simulator serves it there);
 * else Tesla's endpoint for the region.
 *
 * Shards read accounts directly from the shared fq_accounts_t (LMDB read
 * transactions are safe across threads); fq_auth_generation() changes after
 * every write to the store, so a shard can cache decrypted accounts and
 * drop its cache when the number moves.  If a refresh is rejected (the
 * user must connect again), the account record keeps its tokens and the
 * auth thread records the failure: fq_auth_refresh_failure() returns the
 * reason for that account until the next successful write.
 */
#ifndef FQ_AUTH_H
#define FQ_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "accounts.h"
#include "fleetq/error.h"

typedef struct fq_auth fq_auth_t;

typedef struct fq_auth_opts {
  void *zmq_ctx;
  fq_accounts_t *accounts;   /* shared, borrowed */
  const char *ca_file;       /* extra trusted CA for the token endpoint, or NULL */
  const char *token_url;     /* override of the regional token endpoint, or NULL */
  const char *extra_host;    /* simulator host[:port] allowed besides Tesla's in an
                                account_add base_url (fleetqd --allow-host), or NULL */
  bool allow_remote_admin;   /* reserved (see above); not used yet */
  int scan_interval_ms;      /* expiry scan period; 0 = FQ_AUTH_SCAN_INTERVAL_MS */
} fq_auth_opts_t;

#define FQ_AUTH_ADMIN_ENDPOINT "inproc://fq-auth"
#define FQ_AUTH_REFRESH_ENDPOINT "inproc://fq-auth-refresh"
#define FQ_AUTH_SCAN_INTERVAL_MS 30000

/* Create the auth side: copies the option strings, creates its HTTP
 * client (a bad ca_file fails here: FQ_ECONFIG) and binds the PAIR and
 * PULL sockets (FQ_EINTERNAL when the endpoints are taken, e.g. a second
 * auth side in one context).  The thread is not started; the sockets and
 * the HTTP client are handed to it by fq_auth_start() and must not be
 * used by the caller.  NULL with err. */
fq_auth_t *fq_auth_new(const fq_auth_opts_t *opts, fq_err_t *err);
const char *fq_auth_admin_endpoint(const fq_auth_t *a);   /* FQ_AUTH_ADMIN_ENDPOINT: connect a PAIR */
const char *fq_auth_refresh_endpoint(const fq_auth_t *a); /* FQ_AUTH_REFRESH_ENDPOINT: connect PUSH */
/* Start the thread.  0, -EALREADY or -errno. */
int fq_auth_start(fq_auth_t *a);
/* Join (a started thread only ends after 'T' / 'D', or when the context
 * is terminated) and free; NULLs *ap; accepts NULL. */
void fq_auth_destroy(fq_auth_t **ap);

/* Token requests started so far (tests and stats; thread safe). */
uint64_t fq_auth_token_calls(const fq_auth_t *a);

/* The account_add rules for a base URL: http(s)://host[:port][/path]
 * without userinfo, query, fragment or trailing slash; the host a Tesla
 * Fleet API host, extra_host (host or host:port; may be NULL) or loopback;
 * http:// only for loopback (127.0.0.1, localhost, [::1]: a local
 * simulator).  Returns 0 or FQ_EBADPARAM with the reason in err. */
int fq_auth_check_base_url(const char *url, const char *extra_host, fq_err_t *err);

/* The state the auth side shares with the shards lives in its handle (one
 * auth side per daemon, several in one test process), so a shard is lent
 * the handle.  The functions below are thread safe and accept NULL (no
 * auth side: the generation stays 0 and no account has a failure). */

/* Changes after every write to the account store (starts at 1). */
uint64_t fq_auth_generation(const fq_auth_t *a);
/* Bump it (every writer of the account store calls this after its write). */
void fq_auth_bump_generation(fq_auth_t *a);

/* Copy the last refresh failure reason of an account into out ("" when
 * none).  Returns true when there is one. */
bool fq_auth_refresh_failure(const fq_auth_t *a, const char *account, char *out, size_t cap);

/* Copy up to max of the recorded refresh failures (account id, code,
 * reason: never a token) into out; returns how many there are in all. */
size_t fq_auth_refresh_failures(const fq_auth_t *a, char (*ids)[FQ_ACCOUNT_ID_MAX + 1],
                                int *codes, char (*reasons)[200], size_t max);

/* Account-wide refusals (HTTP 412 partner account not registered, 451,
 * 401 mobile_access_disabled): a shard records the code and reason of the
 * first one (a later one replaces it), and every shard then fails the
 * account's commands at once with them, without a request, until
 * account_add or account_remove of that account, or account_retry.  Kept
 * in memory: after a restart the first command asks Fleet API again.
 * fq_auth_account_refused() copies the reason into out ("" when none) and
 * returns the code, 0 when none. */
void fq_auth_account_refuse(fq_auth_t *a, const char *account, int code, const char *reason);
int fq_auth_account_refused(const fq_auth_t *a, const char *account, char *out, size_t cap);

#endif
