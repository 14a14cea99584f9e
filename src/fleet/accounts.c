/*
 * The encrypted account store; see accounts.h for the guarantees.
 *
 * Record layout (value of key = account id in the "accounts" database):
 *
 *   "FQA1" | u16 len + client_id | u16 len + region | u16 len + base_url |
 *   i64 access_exp | u32 scopes | i64 updated_at_ms        <- "header"
 *   nonce[12] | u32 ct_len | ciphertext | tag[16]
 *
 * Integers big-endian.  The plaintext is u16 len + access token | u16 len +
 * refresh token.  AAD = "fleetq-account-v1" | u8 id_len | id | header.
 */
#include "accounts.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byteorder.h"
#include "util.h"

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define MAGIC "FQA1"
#define AAD_LABEL "fleetq-account-v1"
#define REC_MAX (2 * FQ_TOKEN_MAX + 2048)

struct fq_accounts {
  MDB_env *env;
  MDB_dbi dbi;
  uint8_t key[KEY_LEN];
};

/* ---- small helpers ------------------------------------------------------- */

fq_account_t *fq_account_new(void) { return calloc(1, sizeof(fq_account_t)); }

void fq_account_wipe(fq_account_t *a) {
  if (a) OPENSSL_cleanse(a, sizeof *a);
}

void fq_account_free(fq_account_t **a) {
  if (!a || !*a) return;
  fq_account_wipe(*a);
  free(*a);
  *a = NULL;
}

static int lmdb_err(fq_err_t *err, int rc, const char *what) {
  return fq_errf(err, FQ_ESTORAGE, "account store: %s: %s", what, mdb_strerror(rc));
}

static bool valid_id_n(const char *id, size_t n) {
  if (!id || n == 0 || n > FQ_ACCOUNT_ID_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '@' || c == ':' || c == '-'))
      return false;
  }
  return true;
}

static bool valid_id(const char *id) { return id && valid_id_n(id, strlen(id)); }

static bool printable_token(const char *t) {
  for (; *t; t++)
    if (*t <= 0x20 || *t >= 0x7f) return false;
  return true;
}

/* ---- the key file -------------------------------------------------------- */

static int create_key(const char *path, const char *dir, fq_err_t *err) {
  uint8_t k[KEY_LEN];
  int rc = 0;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return 0; /* someone else made it: checked next */
    return fq_errf(err, -errno, "%s: cannot create: %s", path, fq_strerror(-errno));
  }
  /* The umask could only have removed bits; make sure of 0600 anyway. */
  if (fchmod(fd, 0600) != 0 || RAND_bytes(k, KEY_LEN) != 1) {
    rc = fq_errf(err, FQ_EKEYFILE, "%s: cannot initialise the key", path);
    goto out;
  }
  size_t off = 0;
  while (off < KEY_LEN) {
    ssize_t w = write(fd, k + off, KEY_LEN - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = fq_errf(err, -errno, "%s: write: %s", path, fq_strerror(-errno));
      goto out;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0) {
    rc = fq_errf(err, -errno, "%s: fsync: %s", path, fq_strerror(-errno));
    goto out;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd); /* the file's name is durable too */
    close(dfd);
  }
out:
  OPENSSL_cleanse(k, sizeof k);
  close(fd);
  if (rc) unlink(path);
  return rc;
}

static int load_key(const char *path, uint8_t *key, fq_err_t *err) {
  int rc = fq_check_secret_file(path, err);
  if (rc) return rc;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(-errno));
  uint8_t buf[KEY_LEN + 1];
  size_t got = 0;
  for (;;) {
    ssize_t r = read(fd, buf + got, sizeof buf - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
    if (got == sizeof buf) break;
  }
  close(fd);
  if (got != KEY_LEN) {
    rc = fq_errf(err, FQ_EKEYFILE, "%s: must hold exactly %d bytes", path, KEY_LEN);
  } else {
    memcpy(key, buf, KEY_LEN);
  }
  OPENSSL_cleanse(buf, sizeof buf);
  return rc;
}

/* ---- open / close --------------------------------------------------------- */

fq_accounts_t *fq_accounts_open(const char *data_dir, fq_err_t *err) {
  fq_accounts_t *s = NULL;
  char path[4096], kpath[4096];
  int rc;
  MDB_txn *txn = NULL;
  if (snprintf(path, sizeof path, "%s/accounts", data_dir) >= (int)sizeof path ||
      snprintf(kpath, sizeof kpath, "%s/token.key", data_dir) >= (int)sizeof kpath) {
    fq_errf(err, FQ_EBADPARAM, "data directory path too long");
    return NULL;
  }
  if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
    fq_errf(err, -errno, "%s: %s", data_dir, fq_strerror(-errno));
    return NULL;
  }
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    fq_errf(err, -errno, "%s: %s", path, fq_strerror(-errno));
    return NULL;
  }
  s = calloc(1, sizeof *s);
  if (!s) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  struct stat st;
  if (lstat(kpath, &st) != 0) {
    if (errno != ENOENT) {
      fq_errf(err, FQ_EKEYFILE, "%s: %s", kpath, fq_strerror(-errno));
      goto fail;
    }
    if (create_key(kpath, data_dir, err) != 0) goto fail;
  }
  if (load_key(kpath, s->key, err) != 0) goto fail;

  if ((rc = mdb_env_create(&s->env)) != 0) {
    lmdb_err(err, rc, "create");
    goto fail;
  }
  mdb_env_set_maxdbs(s->env, 2);
  mdb_env_set_mapsize(s->env, (size_t)64 << 20);
  /* Durable: no NOSYNC / NOMETASYNC / MAPASYNC / WRITEMAP. */
  if ((rc = mdb_env_open(s->env, path, 0, 0600)) != 0) {
    lmdb_err(err, rc, path);
    goto fail;
  }
  int dead = 0;
  mdb_reader_check(s->env, &dead);
  if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0 ||
      (rc = mdb_dbi_open(txn, "accounts", MDB_CREATE, &s->dbi)) != 0 ||
      (rc = mdb_txn_commit(txn)) != 0) {
    if (txn) mdb_txn_abort(txn);
    lmdb_err(err, rc, "open database");
    goto fail;
  }
  return s;
fail:
  fq_accounts_destroy(&s);
  return NULL;
}

void fq_accounts_destroy(fq_accounts_t **sp) {
  if (!sp || !*sp) return;
  fq_accounts_t *s = *sp;
  if (s->env) mdb_env_close(s->env);
  OPENSSL_cleanse(s->key, sizeof s->key);
  free(s);
  *sp = NULL;
}

/* ---- records ---------------------------------------------------------------- */

/* Header bytes of a (non-secret) account; returns the length. */
static size_t encode_header(const fq_account_t *a, uint8_t *p) {
  size_t k = 0;
  memcpy(p, MAGIC, 4);
  k = 4;
  const char *f[3] = {a->client_id, a->region, a->base_url};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(f[i]);
    fq_put_be16(p + k, (uint16_t)n);
    memcpy(p + k + 2, f[i], n);
    k += 2 + n;
  }
  fq_put_be64(p + k, (uint64_t)a->access_exp);
  fq_put_be32(p + k + 8, a->scopes);
  fq_put_be64(p + k + 12, (uint64_t)a->updated_at_ms);
  return k + 20;
}

static size_t make_aad(const char *id, const uint8_t *hdr, size_t hlen, uint8_t *aad) {
  size_t idl = strlen(id), k = sizeof AAD_LABEL - 1;
  memcpy(aad, AAD_LABEL, k);
  aad[k++] = (uint8_t)idl;
  memcpy(aad + k, id, idl);
  k += idl;
  memcpy(aad + k, hdr, hlen);
  return k + hlen;
}

/* Encrypt a into rec (REC_MAX bytes); returns the record length or a
 * negative code. */
static long seal(const fq_accounts_t *s, const fq_account_t *a, uint8_t *rec, fq_err_t *err) {
  long ret = -1;
  uint8_t *pt = NULL, aad[REC_MAX];
  EVP_CIPHER_CTX *c = NULL;
  size_t al = strlen(a->access_token), rl = strlen(a->refresh_token);
  size_t ptl = 4 + al + rl;
  size_t hl = encode_header(a, rec);
  size_t aadl = make_aad(a->id, rec, hl, aad);
  uint8_t *nonce = rec + hl, *ctl = nonce + NONCE_LEN, *ct = ctl + 4, *tag = ct + ptl;
  int outl = 0, fl = 0;
  pt = malloc(ptl);
  if (!pt) return fq_errf(err, -ENOMEM, "out of memory");
  fq_put_be16(pt, (uint16_t)al);
  memcpy(pt + 2, a->access_token, al);
  fq_put_be16(pt + 2 + al, (uint16_t)rl);
  memcpy(pt + 4 + al, a->refresh_token, rl);
  if (RAND_bytes(nonce, NONCE_LEN) != 1 || !(c = EVP_CIPHER_CTX_new()) ||
      EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
      EVP_EncryptInit_ex(c, NULL, NULL, s->key, nonce) != 1 ||
      EVP_EncryptUpdate(c, NULL, &outl, aad, (int)aadl) != 1 ||
      EVP_EncryptUpdate(c, ct, &outl, pt, (int)ptl) != 1 ||
      EVP_EncryptFinal_ex(c, ct + outl, &fl) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1) {
    ret = fq_errf(err, FQ_ECRYPTO, "account store: encryption failed");
    goto out;
  }
  fq_put_be32(ctl, (uint32_t)ptl);
  ret = (long)(hl + NONCE_LEN + 4 + ptl + TAG_LEN);
out:
  EVP_CIPHER_CTX_free(c);
  OPENSSL_cleanse(pt, ptl);
  free(pt);
  return ret;
}

/* Read a length-prefixed string field into out (cap bytes incl. NUL). */
static bool get_field(const uint8_t *rec, size_t len, size_t *k, char *out, size_t cap) {
  if (*k + 2 > len) return false;
  size_t n = fq_get_be16(rec + *k);
  if (*k + 2 + n > len || n >= cap) return false;
  memcpy(out, rec + *k + 2, n);
  out[n] = 0;
  *k += 2 + n;
  return true;
}

/* Parse the header into a; returns its length, 0 when malformed. */
static size_t parse_header(const uint8_t *rec, size_t len, fq_account_t *a) {
  size_t k = 4;
  if (len < 4 || memcmp(rec, MAGIC, 4) != 0) return 0;
  if (!get_field(rec, len, &k, a->client_id, sizeof a->client_id) ||
      !get_field(rec, len, &k, a->region, sizeof a->region) ||
      !get_field(rec, len, &k, a->base_url, sizeof a->base_url) || k + 20 > len)
    return 0;
  a->access_exp = (int64_t)fq_get_be64(rec + k);
  a->scopes = fq_get_be32(rec + k + 8);
  a->updated_at_ms = (int64_t)fq_get_be64(rec + k + 12);
  return k + 20;
}

static int unseal(const fq_accounts_t *s, const char *id, const uint8_t *rec, size_t len,
                  fq_account_t *a, fq_err_t *err) {
  int rc = 0;
  uint8_t *pt = NULL, aad[REC_MAX];
  size_t ptl = 0;
  EVP_CIPHER_CTX *c = NULL;
  memset(a, 0, sizeof *a);
  snprintf(a->id, sizeof a->id, "%s", id);
  size_t hl = parse_header(rec, len, a);
  if (!hl || hl + NONCE_LEN + 4 > len) goto bad;
  const uint8_t *nonce = rec + hl;
  ptl = fq_get_be32(rec + hl + NONCE_LEN);
  const uint8_t *ct = rec + hl + NONCE_LEN + 4;
  if (hl + NONCE_LEN + 4 + ptl + TAG_LEN != len || ptl < 4) {
    ptl = 0;
    goto bad;
  }
  uint8_t tag[TAG_LEN];
  memcpy(tag, ct + ptl, TAG_LEN);
  size_t aadl = make_aad(id, rec, hl, aad);
  pt = malloc(ptl);
  if (!pt) return fq_errf(err, -ENOMEM, "out of memory");
  int outl = 0, fl = 0;
  if (!(c = EVP_CIPHER_CTX_new()) ||
      EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
      EVP_DecryptInit_ex(c, NULL, NULL, s->key, nonce) != 1 ||
      EVP_DecryptUpdate(c, NULL, &outl, aad, (int)aadl) != 1 ||
      EVP_DecryptUpdate(c, pt, &outl, ct, (int)ptl) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1 ||
      EVP_DecryptFinal_ex(c, pt + outl, &fl) != 1) {
    rc = fq_errf(err, FQ_EVERIFY,
                 "account %s: stored tokens do not authenticate (wrong token.key, or the record "
                 "was altered or copied from another account); add the account again", id);
    goto out;
  }
  size_t al = fq_get_be16(pt);
  if (2 + al + 2 > ptl || al > FQ_TOKEN_MAX) goto bad;
  size_t rl = fq_get_be16(pt + 2 + al);
  if (4 + al + rl != ptl || rl > FQ_TOKEN_MAX) goto bad;
  memcpy(a->access_token, pt + 2, al);
  a->access_token[al] = 0;
  memcpy(a->refresh_token, pt + 4 + al, rl);
  a->refresh_token[rl] = 0;
  goto out;
bad:
  rc = fq_errf(err, FQ_EVERIFY, "account %s: malformed record", id);
out:
  EVP_CIPHER_CTX_free(c);
  if (pt) {
    OPENSSL_cleanse(pt, ptl);
    free(pt);
  }
  if (rc) fq_account_wipe(a);
  return rc;
}

static int validate(const fq_account_t *a, fq_err_t *err) {
  if (!valid_id(a->id))
    return fq_errf(err, FQ_EBADPARAM, "account id must be 1..%d of A-Z a-z 0-9 . _ @ : -",
                   FQ_ACCOUNT_ID_MAX);
  if (!a->client_id[0] || strnlen(a->client_id, sizeof a->client_id) >= sizeof a->client_id)
    return fq_errf(err, FQ_EBADPARAM, "client id required (at most %d bytes)", FQ_CLIENT_ID_MAX);
  if (!a->access_token[0] || !a->refresh_token[0])
    return fq_errf(err, FQ_EBADPARAM, "access token and refresh token required");
  if (strnlen(a->access_token, FQ_TOKEN_MAX + 1) > FQ_TOKEN_MAX ||
      strnlen(a->refresh_token, FQ_TOKEN_MAX + 1) > FQ_TOKEN_MAX)
    return fq_errf(err, FQ_EBADPARAM, "tokens are limited to %d bytes", FQ_TOKEN_MAX);
  if (!printable_token(a->access_token) || !printable_token(a->refresh_token))
    return fq_errf(err, FQ_EBADPARAM, "tokens must be printable ASCII without spaces");
  bool region_ok = strcmp(a->region, "na") == 0 || strcmp(a->region, "eu") == 0 ||
                   strcmp(a->region, "cn") == 0;
  if (a->region[0] && !region_ok)
    return fq_errf(err, FQ_EBADPARAM, "region must be na, eu or cn");
  if (a->base_url[0] && (strncmp(a->base_url, "https://", 8) != 0 &&
                         strncmp(a->base_url, "http://", 7) != 0))
    return fq_errf(err, FQ_EBADPARAM, "base URL must start with https:// (http:// only for a local simulator)");
  if (!a->region[0] && !a->base_url[0])
    return fq_errf(err, FQ_EBADPARAM, "give a region (na, eu, cn) or a base URL");
  if (strnlen(a->base_url, sizeof a->base_url) >= sizeof a->base_url)
    return fq_errf(err, FQ_EBADPARAM, "base URL longer than %d bytes", FQ_BASE_URL_MAX);
  return 0;
}

/* Seal and put a (updated_at set now) inside txn. */
static int write_rec(fq_accounts_t *s, MDB_txn *txn, fq_account_t *a, fq_err_t *err) {
  uint8_t *rec = malloc(REC_MAX);
  int rc;
  if (!rec) return fq_errf(err, -ENOMEM, "out of memory");
  a->updated_at_ms = fq_now_ms();
  long n = seal(s, a, rec, err);
  if (n < 0) {
    rc = (int)n;
    goto out;
  }
  MDB_val k = {strlen(a->id), a->id}, v = {(size_t)n, rec};
  if ((rc = mdb_put(txn, s->dbi, &k, &v, 0)) != 0) rc = lmdb_err(err, rc, "put");
out:
  free(rec);
  return rc;
}

int fq_accounts_put(fq_accounts_t *s, const fq_account_t *in, fq_err_t *err) {
  int rc = validate(in, err);
  if (rc) return rc;
  fq_account_t *a = fq_account_new();
  MDB_txn *txn = NULL;
  if (!a) return fq_errf(err, -ENOMEM, "out of memory");
  *a = *in;
  if (!a->scopes && !a->access_exp) {
    fq_jwt_claims_t c;
    if (fq_jwt_decode(a->access_token, strlen(a->access_token), &c, NULL) == 0) {
      a->scopes = c.scopes;
      a->access_exp = c.exp;
    } else {
      a->scopes = FQ_SCOPES_UNKNOWN;
    }
  }
  if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
    rc = lmdb_err(err, rc, "begin");
    goto out;
  }
  if ((rc = write_rec(s, txn, a, err)) != 0) goto out;
  rc = mdb_txn_commit(txn);
  txn = NULL;
  if (rc) rc = lmdb_err(err, rc, "commit");
out:
  if (txn) mdb_txn_abort(txn);
  fq_account_free(&a);
  return rc;
}

int fq_accounts_get(fq_accounts_t *s, const char *id, fq_account_t *out, fq_err_t *err) {
  MDB_txn *txn = NULL;
  int rc;
  if (!valid_id(id)) return fq_errf(err, FQ_ENOTFOUND, "no such account");
  if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) != 0) return lmdb_err(err, rc, "begin");
  MDB_val k = {strlen(id), (void *)id}, v;
  rc = mdb_get(txn, s->dbi, &k, &v);
  if (rc == MDB_NOTFOUND) rc = fq_errf(err, FQ_ENOTFOUND, "no account %s", id);
  else if (rc) rc = lmdb_err(err, rc, "get");
  else rc = unseal(s, id, v.mv_data, v.mv_size, out, err);
  mdb_txn_abort(txn);
  return rc;
}

int fq_accounts_exists(fq_accounts_t *s, const char *id, size_t len, fq_err_t *err) {
  /* A name the store could never hold (too long, other characters) is
   * simply not there: no transaction needed. */
  if (!valid_id_n(id, len)) return FQ_ENOTFOUND;
  MDB_txn *txn = NULL;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc) return lmdb_err(err, rc, "begin");
  MDB_val k = {len, (void *)id}, v;
  rc = mdb_get(txn, s->dbi, &k, &v);
  mdb_txn_abort(txn);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  return rc ? lmdb_err(err, rc, "get") : 0;
}

int fq_accounts_list(fq_accounts_t *s, fq_account_info_t **out, size_t *n, fq_err_t *err) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  fq_account_info_t *arr = NULL;
  size_t cnt = 0, alloc = 0;
  int rc;
  *out = NULL;
  *n = 0;
  if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) != 0) return lmdb_err(err, rc, "begin");
  if ((rc = mdb_cursor_open(txn, s->dbi, &cur)) != 0) {
    rc = lmdb_err(err, rc, "cursor");
    goto out;
  }
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    fq_account_t hdr; /* header fields only: no secrets are read here */
    memset(&hdr, 0, sizeof hdr);
    if (k.mv_size > FQ_ACCOUNT_ID_MAX || !parse_header(v.mv_data, v.mv_size, &hdr)) continue;
    if (cnt == alloc) {
      size_t na = alloc ? alloc * 2 : 16;
      fq_account_info_t *nw = realloc(arr, na * sizeof *nw);
      if (!nw) {
        rc = fq_errf(err, -ENOMEM, "out of memory");
        goto out;
      }
      arr = nw;
      alloc = na;
    }
    fq_account_info_t *i = &arr[cnt++];
    memset(i, 0, sizeof *i);
    memcpy(i->id, k.mv_data, k.mv_size);
    memcpy(i->client_id, hdr.client_id, sizeof i->client_id);
    memcpy(i->region, hdr.region, sizeof i->region);
    memcpy(i->base_url, hdr.base_url, sizeof i->base_url);
    i->access_exp = hdr.access_exp;
    i->scopes = hdr.scopes;
    i->updated_at_ms = hdr.updated_at_ms;
  }
  rc = rc == MDB_NOTFOUND ? 0 : lmdb_err(err, rc, "cursor");
out:
  if (cur) mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  if (rc) {
    free(arr);
    return rc;
  }
  *out = arr;
  *n = cnt;
  return 0;
}

int fq_accounts_remove(fq_accounts_t *s, const char *id, fq_err_t *err) {
  MDB_txn *txn = NULL;
  int rc;
  if (!valid_id(id)) return fq_errf(err, FQ_ENOTFOUND, "no such account");
  if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) return lmdb_err(err, rc, "begin");
  MDB_val k = {strlen(id), (void *)id};
  rc = mdb_del(txn, s->dbi, &k, NULL);
  if (rc == MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return fq_errf(err, FQ_ENOTFOUND, "no account %s", id);
  }
  if (rc) {
    mdb_txn_abort(txn);
    return lmdb_err(err, rc, "delete");
  }
  if ((rc = mdb_txn_commit(txn)) != 0) return lmdb_err(err, rc, "commit");
  return 0;
}

/* Read-modify-write of one record in a single write transaction. */
typedef void (*modify_fn)(fq_account_t *a, const void *arg);

static int modify(fq_accounts_t *s, const char *id, modify_fn fn, const void *arg, fq_err_t *err) {
  MDB_txn *txn = NULL;
  int rc;
  fq_account_t *a = fq_account_new();
  if (!a) return fq_errf(err, -ENOMEM, "out of memory");
  if (!valid_id(id)) {
    rc = fq_errf(err, FQ_ENOTFOUND, "no such account");
    goto out;
  }
  if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
    rc = lmdb_err(err, rc, "begin");
    goto out;
  }
  MDB_val k = {strlen(id), (void *)id}, v;
  rc = mdb_get(txn, s->dbi, &k, &v);
  if (rc == MDB_NOTFOUND) {
    rc = fq_errf(err, FQ_ENOTFOUND, "no account %s", id);
    goto out;
  }
  if (rc) {
    rc = lmdb_err(err, rc, "get");
    goto out;
  }
  if ((rc = unseal(s, id, v.mv_data, v.mv_size, a, err)) != 0) goto out;
  fn(a, arg);
  if ((rc = validate(a, err)) != 0) goto out;
  if ((rc = write_rec(s, txn, a, err)) != 0) goto out;
  rc = mdb_txn_commit(txn);
  txn = NULL;
  if (rc) rc = lmdb_err(err, rc, "commit");
out:
  if (txn) mdb_txn_abort(txn);
  fq_account_free(&a);
  return rc;
}

typedef struct tok_arg {
  const char *access, *refresh;
  int64_t exp;
  unsigned scopes;
} tok_arg_t;

static void set_tokens(fq_account_t *a, const void *p) {
  const tok_arg_t *t = p;
  OPENSSL_cleanse(a->access_token, sizeof a->access_token);
  snprintf(a->access_token, sizeof a->access_token, "%s", t->access);
  if (t->refresh && t->refresh[0]) {
    OPENSSL_cleanse(a->refresh_token, sizeof a->refresh_token);
    snprintf(a->refresh_token, sizeof a->refresh_token, "%s", t->refresh);
  }
  a->access_exp = t->exp;
  a->scopes = t->scopes;
  if (!t->scopes) {
    /* No scopes given (a refresh reply without `scope` keeps the expiry
     * from expires_in): only a JWT can tell them. */
    fq_jwt_claims_t c;
    if (fq_jwt_decode(a->access_token, strlen(a->access_token), &c, NULL) == 0) {
      if (!t->exp) a->access_exp = c.exp;
      a->scopes = c.scopes;
    } else {
      a->scopes = FQ_SCOPES_UNKNOWN;
    }
  }
}

int fq_accounts_update_tokens(fq_accounts_t *s, const char *id, const char *access_token,
                              const char *refresh_token, int64_t access_exp, unsigned scopes,
                              fq_err_t *err) {
  if (!access_token || !access_token[0] || strlen(access_token) > FQ_TOKEN_MAX ||
      (refresh_token && strlen(refresh_token) > FQ_TOKEN_MAX))
    return fq_errf(err, FQ_EBADPARAM, "access token required, tokens at most %d bytes",
                   FQ_TOKEN_MAX);
  tok_arg_t t = {access_token, refresh_token, access_exp, scopes};
  return modify(s, id, set_tokens, &t, err);
}

static void set_url(fq_account_t *a, const void *p) {
  snprintf(a->base_url, sizeof a->base_url, "%s", (const char *)p);
}

int fq_accounts_set_base_url(fq_accounts_t *s, const char *id, const char *base_url,
                             fq_err_t *err) {
  if (!base_url || strlen(base_url) > FQ_BASE_URL_MAX)
    return fq_errf(err, FQ_EBADPARAM, "base URL missing or longer than %d bytes",
                   FQ_BASE_URL_MAX);
  return modify(s, id, set_url, base_url, err);
}
