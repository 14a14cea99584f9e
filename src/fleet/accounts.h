/*
 * The account and token store: one LMDB environment (<data>/accounts) of
 * Fleet API accounts, their OAuth tokens encrypted at rest.
 *
 * Encryption: AES-256-GCM with a 32-byte key kept in <data>/token.key
 * (created 0600 on first start; refused if it is a symlink or readable or
 * writable by group or others).  Every write draws a fresh random 12-byte
 * nonce.  The additional authenticated data binds the account id and all
 * non-secret fields of the record, so a record copied under another
 * account id, or edited on disk, fails to decrypt (FQ_EVERIFY) instead of
 * handing one account's tokens to another.
 *
 * Durability: the environment is opened without MDB_NOSYNC and friends;
 * every function that writes returns only after the commit is on disk.
 * That matters most for fq_accounts_update_tokens(): Tesla refresh tokens
 * are single use, so the new one must be stored before the new access
 * token is used.
 *
 * Threads: every call is one self-contained LMDB transaction, so the handle
 * may be used from several threads (LMDB serialises writers); by design a
 * single owner (the auth side of the daemon) writes, shards read.
 */
#ifndef FQ_ACCOUNTS_H
#define FQ_ACCOUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"
#include "jwt.h"

#define FQ_ACCOUNT_ID_MAX 64
#define FQ_CLIENT_ID_MAX 256
#define FQ_BASE_URL_MAX 256

typedef struct fq_accounts fq_accounts_t;

/* One account with its secrets.  Holds tokens: allocate with
 * fq_account_new() / free with fq_account_free(), or wipe a stack copy with
 * fq_account_wipe() before it goes out of scope. */
typedef struct fq_account {
  char id[FQ_ACCOUNT_ID_MAX + 1];
  char client_id[FQ_CLIENT_ID_MAX + 1];
  char region[8];                        /* "na", "eu", "cn" or "" */
  char base_url[FQ_BASE_URL_MAX + 1];    /* "" = the region's */
  char access_token[FQ_TOKEN_MAX + 1];
  char refresh_token[FQ_TOKEN_MAX + 1];
  int64_t access_exp;                    /* Unix seconds, 0 = unknown */
  unsigned scopes;                       /* FQ_SCOPE_* bits, or FQ_SCOPES_UNKNOWN */
  int64_t updated_at_ms;                 /* set by the store on each write */
} fq_account_t;

/* In `scopes`: the access token is not a JWT, so what it grants is not
 * known here.  Commands are then sent and Fleet API's 403 decides; this
 * bit is no scope, so fq_cmd_allowed() never matches it. */
#define FQ_SCOPES_UNKNOWN 0x80000000u

/* The same without secrets, for listings. */
typedef struct fq_account_info {
  char id[FQ_ACCOUNT_ID_MAX + 1];
  char client_id[FQ_CLIENT_ID_MAX + 1];
  char region[8];
  char base_url[FQ_BASE_URL_MAX + 1];
  int64_t access_exp;
  unsigned scopes;
  int64_t updated_at_ms;
} fq_account_info_t;

/* Zeroed account on the heap / wipe-and-free (NULLs *a, accepts NULL). */
fq_account_t *fq_account_new(void);
void fq_account_free(fq_account_t **a);
/* OPENSSL_cleanse the whole struct. */
void fq_account_wipe(fq_account_t *a);

/* Open (creating on first start) <data_dir>/accounts and
 * <data_dir>/token.key.  Returns NULL with err set: FQ_EKEYFILE (key file
 * is a symlink, readable by others, or not 32 bytes), FQ_ESTORAGE (LMDB),
 * -errno. */
fq_accounts_t *fq_accounts_open(const char *data_dir, fq_err_t *err);

/* Close; wipes the key from memory; NULLs *s; accepts NULL. */
void fq_accounts_destroy(fq_accounts_t **s);

/* Add or replace an account.  id: 1..64 of [A-Za-z0-9._@:-]; client_id
 * and both tokens required; region one of na/eu/cn, or base_url https://
 * (or both).  When scopes and access_exp are 0 they are read from the
 * access token if it is a JWT, else scopes become FQ_SCOPES_UNKNOWN.  Returns 0, FQ_EBADPARAM, FQ_ESTORAGE,
 * FQ_ECRYPTO. */
int fq_accounts_put(fq_accounts_t *s, const fq_account_t *a, fq_err_t *err);

/* Read and decrypt account id into *out (caller memory; wipe it after).
 * Returns 0, FQ_ENOTFOUND, FQ_EVERIFY (record does not authenticate: wrong
 * key, tampered, or copied from another id), FQ_ESTORAGE. */
int fq_accounts_get(fq_accounts_t *s, const char *id, fq_account_t *out, fq_err_t *err);

/* Whether the store holds account id (len bytes, not NUL-terminated): a
 * read of the key alone, nothing decrypted, so it is cheap enough for every
 * submit (one LMDB read transaction) and sees every write committed before
 * the call.  An id that is not a valid account id (length, characters) is
 * FQ_ENOTFOUND without a lookup.  Returns 0 (present, even if its record
 * would not decrypt: fq_accounts_get() says so when it is used),
 * FQ_ENOTFOUND, FQ_ESTORAGE.  Thread safe like every read here. */
int fq_accounts_exists(fq_accounts_t *s, const char *id, size_t len, fq_err_t *err);

/* All accounts without secrets, sorted by id, in a malloc'd array (free
 * with free()).  The fields are read without decrypting, so they are not
 * authenticated here: fq_accounts_get() is what verifies a record.  *n may be 0 (then *out is NULL).  Returns 0, -ENOMEM,
 * FQ_ESTORAGE. */
int fq_accounts_list(fq_accounts_t *s, fq_account_info_t **out, size_t *n, fq_err_t *err);

/* Delete an account.  Returns 0, FQ_ENOTFOUND, FQ_ESTORAGE. */
int fq_accounts_remove(fq_accounts_t *s, const char *id, fq_err_t *err);

/* Store the result of a token refresh: new access token, its expiry and
 * scopes (0 / 0 = read from the JWT, FQ_SCOPES_UNKNOWN if it is none), and the new refresh token (NULL or
 * "" keeps the old one).  Returns after the commit is durable: only then
 * may the caller use the new access token.  Returns as fq_accounts_put(),
 * plus FQ_ENOTFOUND / FQ_EVERIFY for the existing record. */
int fq_accounts_update_tokens(fq_accounts_t *s, const char *id, const char *access_token,
                              const char *refresh_token, int64_t access_exp, unsigned scopes,
                              fq_err_t *err);

/* Remember a new base URL for the account (after a 421).  The caller
 * validates the host (fq_fa_host_allowed).  Returns as
 * fq_accounts_update_tokens(). */
int fq_accounts_set_base_url(fq_accounts_t *s, const char *id, const char *base_url,
                             fq_err_t *err);

#endif
