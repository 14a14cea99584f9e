/*
 * Reading the claims of a Tesla access token (a JWT).  fleetq is the
 * bearer, not the verifier: the signature is not checked, the claims only
 * tell us which scopes were granted (`scp`), when the token expires
 * (`exp`), which Fleet API hosts it is meant for (`aud`, `ou_code`) and
 * whose it is (`sub`).  Nothing here trusts the claims for security; they
 * save billed requests (a missing scope is refused locally) and pick the
 * region.
 *
 * Pure functions over caller memory; thread safe.
 */
#ifndef FQ_JWT_H
#define FQ_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"

#define FQ_JWT_MAX 16384     /* longest token accepted */
/* Longest access or refresh token fleetq stores or sends (Tesla access
 * tokens are about 1-2 KB). */
#define FQ_TOKEN_MAX 8192
#define FQ_JWT_MAX_AUD 16    /* audiences kept (more are ignored) */
#define FQ_JWT_STR_MAX 256   /* longest sub / aud entry kept */

typedef struct fq_jwt_claims {
  unsigned scopes;                        /* FQ_SCOPE_* bits from `scp` */
  int64_t exp;                            /* Unix seconds, 0 when absent */
  int64_t iat;                            /* Unix seconds, 0 when absent */
  char sub[FQ_JWT_STR_MAX];               /* "" when absent */
  char ou_code[16];                       /* "NA", "EU", "CN"...; "" when absent */
  size_t naud;
  char aud[FQ_JWT_MAX_AUD][FQ_JWT_STR_MAX];
} fq_jwt_claims_t;

/* Decode the payload of token (len bytes, no NUL needed) into out.
 * `scp` may be an array of names or one space-separated string; `aud` an
 * array or a string; unknown scope names are ignored.  Returns 0,
 * FQ_ETOOLARGE (token over FQ_JWT_MAX) or FQ_EBADPARAM (not three
 * base64url parts, payload not a JSON object, a claim of the wrong type),
 * with the reason in err; the token itself never goes into err. */
int fq_jwt_decode(const char *token, size_t len, fq_jwt_claims_t *out, fq_err_t *err);

/* The Fleet API base URL the token is meant for, the way Tesla's SDK picks
 * it: among `aud` entries naming a host `fleet-api.*` under .tesla.com,
 * .tesla.cn or .teslamotors.com, prefer the one containing `.<ou_code>.`
 * (lower case), else the first.  Writes "https://HOST" into out.  Returns
 * 0, FQ_ENOTFOUND (no such audience) or FQ_ETOOLARGE (cap too small). */
int fq_jwt_fleet_base_url(const fq_jwt_claims_t *c, char *out, size_t cap);

/* FQ_SCOPE_* bits of a space- or comma-separated list of scope names;
 * unknown names are ignored. */
unsigned fq_jwt_scope_words(const char *s);

#endif
