/*
 * OAuth refresh for Tesla user tokens: building the refresh request,
 * reading the token endpoint's answer, and when to refresh.
 *
 * How the pieces fit (the dispatcher does the flow; see
 * docs/dispatch-notes.md): when fq_oauth_needs_refresh() says so, or once
 * after a 401, the owner of the account starts ONE refresh (single flight
 * per account: later callers wait for its result).  It POSTs
 * fq_oauth_refresh_body() to fq_oauth_token_url() with
 * Content-Type application/x-www-form-urlencoded through fq_http, parses
 * the reply with fq_oauth_parse_response(), and on FQ_OAUTH_OK calls
 * fq_accounts_update_tokens() (durable commit) BEFORE any request uses the
 * new access token, because Tesla refresh tokens are single use: losing
 * the new one locks the account out.
 *
 * Pure functions; thread safe.  Buffers that held tokens should be wiped
 * (fq_oauth_wipe_buf, fq_oauth_result_wipe).
 */
#ifndef FQ_OAUTH_H
#define FQ_OAUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"
#include "jwt.h"

/* Refresh this long before the access token expires. */
#define FQ_OAUTH_REFRESH_MARGIN_S 300

/* Token endpoint for a region ("na", "eu", "cn"); NULL when unknown.
 * Static string. */
const char *fq_oauth_token_url(const char *region);

/* Append `grant_type=refresh_token&client_id=...&refresh_token=...`,
 * values percent-encoded (RFC 3986 unreserved characters kept), to out.
 * Returns 0, FQ_EBADPARAM (empty or over-long value) or the buffer's
 * error.  out then holds a secret: wipe it with fq_oauth_wipe_buf(). */
int fq_oauth_refresh_body(fq_buf_t *out, const char *client_id, const char *refresh_token,
                          fq_err_t *err);

/* Zero a buffer's whole allocation, then free it. */
void fq_oauth_wipe_buf(fq_buf_t *b);

typedef enum fq_oauth_status {
  FQ_OAUTH_OK = 0,  /* new tokens in the result */
  FQ_OAUTH_RETRY,   /* 429 / 5xx: the old refresh token is still good; retry later */
  FQ_OAUTH_REJECTED,/* 4xx (invalid_grant, login_required, ...): the user must
                       connect the account again */
  FQ_OAUTH_UNREADABLE, /* 200 with a reply we cannot read: the old refresh
                       token may already be spent; retry once with it, and
                       if that is rejected the user must connect again */
} fq_oauth_status_t;

typedef struct fq_oauth_result {
  fq_oauth_status_t status;
  char access_token[FQ_TOKEN_MAX + 1];
  char refresh_token[FQ_TOKEN_MAX + 1]; /* "" when the reply carried none:
                                           keep the old one */
  int64_t expires_in;                   /* seconds, 0 when absent */
  int64_t access_exp;                   /* Unix seconds: JWT exp, else now + expires_in */
  unsigned scopes;                      /* from the JWT scp, else the reply's scope */
  char error[64];                       /* the endpoint's `error`, "" when none */
  char reason[384];                     /* human text for status events */
  int64_t retry_after_s;                /* RETRY: suggested wait */
} fq_oauth_result_t;

/* Read a token endpoint reply (status, body) at time now_s into out.
 * Returns 0 with out->status set for every HTTP answer (even an error
 * one); a negative code only for misuse (-EINVAL).  retry_after is the
 * Retry-After header value or NULL. */
int fq_oauth_parse_response(long status, const uint8_t *body, size_t len, const char *retry_after,
                            int64_t now_s, fq_oauth_result_t *out);

/* Zero a result (tokens included). */
void fq_oauth_result_wipe(fq_oauth_result_t *r);

/* True when an access token expiring at exp_s (Unix seconds) should be
 * refreshed at now_s: within FQ_OAUTH_REFRESH_MARGIN_S of expiry or past
 * it.  exp_s 0 (unknown) never asks: a 401 will. */
bool fq_oauth_needs_refresh(int64_t now_s, int64_t exp_s);

/* When to schedule the refresh of a token expiring at exp_s (Unix
 * seconds); 0 when exp_s is 0. */
int64_t fq_oauth_refresh_at(int64_t exp_s);

#endif
