/*
 * The auth thread: the one writer of the account store.  It answers the
 * admin requests that the ingress forwards (account add / list / remove),
 * refreshes OAuth tokens with single flight per account (on a shard's
 * request after a 401, and proactively about five minutes before expiry),
 * and stores every rotated refresh token durably before the new access
 * token can be used.
 *
 * Messaging (inproc ZeroMQ, like the shards):
 *   ingress <-> auth   PAIR at fq_auth_admin_endpoint(): the shard framing
 *                      of shard.h ('Q' envelope... body -> 'R' envelope...
 *                      reply; 'T' -> 'D'); bodies are `op: "admin"`
 *                      requests (see proto/wire-protocol.md).
 *   shards  -> auth    PUSH to fq_auth_refresh_endpoint(): one frame
 *                      "R<account id>" asking for a refresh.  No reply: a
 *                      shard learns the outcome by polling
 *                      fq_auth_generation() and re-reading the account.
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
  const char *extra_host;    /* simulator host[:port] allowed besides Tesla's, or NULL */
  bool allow_remote_admin;   /* false: admin only from loopback clients */
} fq_auth_opts_t;

/* Create the auth side; the thread is not started.  NULL with err. */
fq_auth_t *fq_auth_new(const fq_auth_opts_t *opts, fq_err_t *err);
const char *fq_auth_admin_endpoint(const fq_auth_t *a);   /* ingress binds a PAIR here */
const char *fq_auth_refresh_endpoint(const fq_auth_t *a); /* auth binds PULL; shards connect */
/* Start the thread (after the ingress bound its PAIR). 0 or -errno. */
int fq_auth_start(fq_auth_t *a);
/* Join (after 'T' / 'D') and free; NULLs *ap; accepts NULL. */
void fq_auth_destroy(fq_auth_t **ap);

/* Changes after every write to the account store (thread safe). */
uint64_t fq_auth_generation(void);
/* Bump it (the store's writers call this; thread safe). */
void fq_auth_bump_generation(void);

/* Copy the last refresh failure reason of an account into out ("" when
 * none); thread safe.  Returns true when there is one. */
bool fq_auth_refresh_failure(const char *account, char *out, size_t cap);

#endif
