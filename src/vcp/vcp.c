/*
 * The client side of the Tesla Vehicle Command Protocol (see vcp.h): the
 * fleet key, handshakes, sessions, HMAC-personalized signing, reply
 * authentication and decryption, and the fault classification.
 *
 * Signing is the hot path of the dispatcher, so a session keeps an
 * EVP_MAC context already keyed with K' = HMAC(K, "authenticated command")
 * and the RoutableMessage of a signed command is packed by hand into the
 * caller's buffer: one signature costs one HMAC over M || P plus a few
 * hundred bytes of copying, and no allocation once the buffer has grown.
 * Everything else (decoding replies) goes through protobuf-c.
 */
#include "vcp.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "byteorder.h"
#include "signatures.pb-c.h"
#include "universal_message.pb-c.h"
#include "util.h"
#include "vcp_int.h"

#define KEY_FILE_MAX (16 * 1024)
#define P256_GROUP "prime256v1"

/* ---------------------------------------------------------------------- */
/* Faults and their classification                                         */

static const char *const fault_names[] = {
#define FQ__VCP_FAULT_NAME(name, v) [v] = #name,
    FQ_VCP_FAULTS(FQ__VCP_FAULT_NAME)
#undef FQ__VCP_FAULT_NAME
};

const char *fq_vcp_fault_name(int fault) {
  if (fault < 0 || fault >= FQ_VCP_FAULT_COUNT_) return "UNRECOGNIZED";
  return fault_names[fault];
}

const char *fq_vcp_action_name(fq_vcp_action_t a) {
  switch (a) {
  case FQ_VCP_OK: return "ok";
  case FQ_VCP_RETRY: return "retry";
  case FQ_VCP_RESYNC_RETRY: return "resync_retry";
  case FQ_VCP_FAIL: return "fail";
  case FQ_VCP_UNKNOWN: return "unknown";
  }
  return "?";
}

/* What the dispatcher does for each MessageFault_E, and the text users
 * see.  The table follows the spec's fault table; REPEATED_COUNTER is
 * resynced like INVALID_TOKEN_OR_COUNTER because the cure is the same, but
 * unlike that fault it may answer a command the car already ran (the
 * dispatcher retries it only for an idempotent command, as Tesla's client
 * does). */
static const struct {
  fq_vcp_action_t action;
  const char *reason;
} fault_table[FQ_VCP_FAULT_COUNT_] = {
    [0] = {FQ_VCP_OK, ""},
    [1] = {FQ_VCP_RETRY, "vehicle busy: a required subsystem is busy"},
    [2] = {FQ_VCP_RETRY, "vehicle timeout: a required subsystem did not respond"},
    [3] = {FQ_VCP_FAIL,
           "vehicle rejected request: your public key has not been paired with the vehicle"},
    [4] = {FQ_VCP_FAIL, "vehicle rejected request: the key has been disabled on the vehicle"},
    [5] = {FQ_VCP_RESYNC_RETRY, "vehicle rejected the command signature; session resynced"},
    [6] = {FQ_VCP_RESYNC_RETRY, "vehicle rejected the anti-replay counter; session resynced"},
    [7] = {FQ_VCP_FAIL, "vehicle rejected request: the key's role or the vehicle's state "
                        "does not allow this command"},
    [8] = {FQ_VCP_FAIL, "vehicle rejected request: invalid destination domain (client error "
                        "or old firmware)"},
    [9] = {FQ_VCP_FAIL, "vehicle rejected request: command not supported by this firmware"},
    [10] = {FQ_VCP_FAIL, "vehicle could not decode the command (client bug)"},
    [11] = {FQ_VCP_RETRY, "vehicle internal error (it may still be booting)"},
    [12] = {FQ_VCP_FAIL, "vehicle rejected request: the command was signed for another VIN"},
    [13] = {FQ_VCP_FAIL, "vehicle rejected request: malformed or deprecated parameter"},
    [14] = {FQ_VCP_FAIL, "vehicle rejected request: the vehicle's keychain is full"},
    [15] = {FQ_VCP_RESYNC_RETRY, "vehicle session epoch changed; session resynced"},
    [16] = {FQ_VCP_FAIL, "vehicle rejected request: AES-GCM IV of the wrong length (client bug)"},
    [17] = {FQ_VCP_RESYNC_RETRY, "command expired before the vehicle got it; clock resynced"},
    [18] = {FQ_VCP_FAIL, "vehicle has no identity provisioned (needs service)"},
    [19] = {FQ_VCP_FAIL, "vehicle could not hash the command metadata"},
    [20] = {FQ_VCP_RESYNC_RETRY, "command lifetime too long for the vehicle; clock resynced"},
    [21] = {FQ_VCP_FAIL, "vehicle rejected request: the owner disabled mobile access"},
    [22] = {FQ_VCP_FAIL, "vehicle rejected request: remote service access is disabled"},
    [23] = {FQ_VCP_FAIL, "vehicle rejected request: command requires account credentials"},
    [24] = {FQ_VCP_FAIL, "vehicle rejected request: request too large"},
    [25] = {FQ_VCP_UNKNOWN, "vehicle received the command but its response was too large: "
                            "outcome unknown"},
    [26] = {FQ_VCP_RESYNC_RETRY, "vehicle saw a repeated counter; session resynced"},
    [27] = {FQ_VCP_FAIL, "vehicle rejected request: invalid key handle (the key may have "
                         "been revoked)"},
    [28] = {FQ_VCP_FAIL, "vehicle requires response encryption"},
};

void fq_vcp_classify_fault(int fault, fq_vcp_outcome_t *out) {
  out->fault = fault;
  out->car_refused = false;
  out->car_reason[0] = 0;
  if (fault < 0 || fault >= FQ_VCP_FAULT_COUNT_) {
    out->action = FQ_VCP_FAIL;
    out->error = FQ_EFAULT;
    snprintf(out->reason, sizeof out->reason, "vehicle reported unrecognized fault %d", fault);
    return;
  }
  out->action = fault_table[fault].action;
  out->error = fault == 0 ? 0 : fault == FQ_VCP_FAULT_UNKNOWN_KEY_ID ? FQ_ENOTPAIRED : FQ_EFAULT;
  snprintf(out->reason, sizeof out->reason, "%s", fault_table[fault].reason);
}

static void outcome_set(fq_vcp_outcome_t *o, fq_vcp_action_t a, int fault, int error,
                        const char *reason) {
  if (!o) return;
  o->action = a;
  o->fault = fault;
  o->error = error;
  o->car_refused = false;
  o->car_reason[0] = 0;
  snprintf(o->reason, sizeof o->reason, "%.*s", (int)sizeof o->reason - 1, reason);
}

/* ---------------------------------------------------------------------- */
/* Primitives                                                              */

static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static EVP_MAC *g_hmac;

/* Algorithms fetched once: OpenSSL 3 fetches a method for every call that
 * names one by a legacy getter (EVP_sha256(), EVP_aes_128_gcm()), and that
 * lookup cost more than a whole reply's decryption. */
static EVP_CIPHER *g_gcm;
static EVP_MD *g_sha256;

static void fetch_mac(void) {
  g_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  g_gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
  g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *fq__vcp_sha256(void) {
  pthread_once(&mac_once, fetch_mac);
  return g_sha256;
}

/* A new HMAC-SHA256 context keyed with key; NULL on failure. */
static EVP_MAC_CTX *hmac_ctx_new(const uint8_t *key, size_t keylen) {
  pthread_once(&mac_once, fetch_mac);
  if (!g_hmac) return NULL;
  EVP_MAC_CTX *c = EVP_MAC_CTX_new(g_hmac);
  if (!c) return NULL;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  if (!EVP_MAC_init(c, key, keylen, params)) {
    EVP_MAC_CTX_free(c);
    return NULL;
  }
  return c;
}

int fq__vcp_hmac(const uint8_t *key, size_t keylen, const uint8_t *a, size_t alen,
                 const uint8_t *b, size_t blen, uint8_t out[32]) {
  int rc = FQ_ECRYPTO;
  size_t olen = 0;
  EVP_MAC_CTX *c = hmac_ctx_new(key, keylen);
  if (!c) return FQ_ECRYPTO;
  if (!EVP_MAC_update(c, a, alen)) goto out;
  if (blen && !EVP_MAC_update(c, b, blen)) goto out;
  if (!EVP_MAC_final(c, out, &olen, 32) || olen != 32) goto out;
  rc = 0;
out:
  EVP_MAC_CTX_free(c);
  return rc;
}

int fq__vcp_random(uint8_t *p, size_t n) { return RAND_bytes(p, (int)n) == 1 ? 0 : FQ_ECRYPTO; }

void fq_vcp_meta_init(fq_vcp_meta_t *m, uint8_t *buf, size_t cap) {
  m->p = buf;
  m->len = 0;
  m->cap = cap;
  m->last_tag = -1;
  m->bad = false;
}

void fq_vcp_meta_add(fq_vcp_meta_t *m, int tag, const void *v, size_t n) {
  if (m->bad || tag <= m->last_tag || tag < 0 || tag >= FQ_VCP_TAG_END || n > 255 ||
      m->cap - m->len < n + 2) {
    m->bad = true;
    return;
  }
  m->p[m->len++] = (uint8_t)tag;
  m->p[m->len++] = (uint8_t)n;
  if (n) memcpy(m->p + m->len, v, n);
  m->len += n;
  m->last_tag = tag;
}

void fq_vcp_meta_add_u32(fq_vcp_meta_t *m, int tag, uint32_t v) {
  uint8_t b[4];
  fq_put_be32(b, v);
  fq_vcp_meta_add(m, tag, b, 4);
}

size_t fq_vcp_meta_end(fq_vcp_meta_t *m) {
  if (m->bad || m->len >= m->cap) return 0;
  m->p[m->len++] = FQ_VCP_TAG_END;
  m->last_tag = FQ_VCP_TAG_END;
  return m->len;
}

int fq_vcp_session_info_key(const uint8_t k[FQ_VCP_KEY_LEN], uint8_t out[32]) {
  static const char label[] = "session info";
  return fq__vcp_hmac(k, FQ_VCP_KEY_LEN, (const uint8_t *)label, sizeof label - 1, NULL, 0, out);
}

int fq_vcp_command_key(const uint8_t k[FQ_VCP_KEY_LEN], uint8_t out[32]) {
  static const char label[] = "authenticated command";
  return fq__vcp_hmac(k, FQ_VCP_KEY_LEN, (const uint8_t *)label, sizeof label - 1, NULL, 0, out);
}

size_t fq__vcp_session_info_meta(const char *vin, const uint8_t *challenge, size_t clen,
                                 uint8_t *out, size_t cap) {
  fq_vcp_meta_t m;
  uint8_t t = FQ_VCP_SIG_HMAC;
  fq_vcp_meta_init(&m, out, cap);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_SIGNATURE_TYPE, &t, 1);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_PERSONALIZATION, vin, strlen(vin));
  fq_vcp_meta_add(&m, FQ_VCP_TAG_CHALLENGE, challenge, clen);
  return fq_vcp_meta_end(&m);
}

int fq_vcp_session_info_tag(const uint8_t k[FQ_VCP_KEY_LEN], const char *vin,
                            const uint8_t *challenge, size_t challenge_len,
                            const uint8_t *info, size_t info_len, uint8_t out[FQ_VCP_TAG_LEN]) {
  uint8_t sik[32], meta[320];
  int rc = fq_vcp_session_info_key(k, sik);
  if (rc) return rc;
  size_t ml = fq__vcp_session_info_meta(vin, challenge, challenge_len, meta, sizeof meta);
  if (!ml) rc = FQ_EPROTO;
  else rc = fq__vcp_hmac(sik, sizeof sik, meta, ml, info, info_len, out);
  OPENSSL_cleanse(sik, sizeof sik);
  return rc;
}

size_t fq__vcp_command_meta(int domain, const char *vin, const uint8_t epoch[FQ_VCP_EPOCH_LEN],
                            uint32_t expires_at, uint32_t counter, uint32_t flags, uint8_t *out,
                            size_t cap) {
  fq_vcp_meta_t m;
  uint8_t t = FQ_VCP_SIG_HMAC_PERSONALIZED, d = (uint8_t)domain;
  fq_vcp_meta_init(&m, out, cap);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_SIGNATURE_TYPE, &t, 1);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_DOMAIN, &d, 1);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_PERSONALIZATION, vin, strlen(vin));
  fq_vcp_meta_add(&m, FQ_VCP_TAG_EPOCH, epoch, FQ_VCP_EPOCH_LEN);
  fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_EXPIRES_AT, expires_at);
  fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_COUNTER, counter);
  if (flags) fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_FLAGS, flags);
  return fq_vcp_meta_end(&m);
}

size_t fq_vcp_request_hash(int domain, const uint8_t tag[FQ_VCP_TAG_LEN], uint8_t out[33]) {
  size_t n = domain == FQ_VCP_DOMAIN_VCSEC ? 16 : FQ_VCP_TAG_LEN;
  out[0] = FQ_VCP_SIG_HMAC_PERSONALIZED;
  memcpy(out + 1, tag, n);
  return n + 1;
}

size_t fq_vcp_response_metadata(int from_domain, const char *vin, uint32_t counter,
                                uint32_t flags, const uint8_t *req_hash, size_t req_hash_len,
                                uint32_t fault, uint8_t *out, size_t cap) {
  fq_vcp_meta_t m;
  uint8_t t = FQ_VCP_SIG_AES_GCM_RESPONSE, d = (uint8_t)from_domain;
  fq_vcp_meta_init(&m, out, cap);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_SIGNATURE_TYPE, &t, 1);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_DOMAIN, &d, 1);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_PERSONALIZATION, vin, strlen(vin));
  fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_COUNTER, counter);
  fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_FLAGS, flags);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_REQUEST_HASH, req_hash, req_hash_len);
  fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_FAULT, fault);
  return fq_vcp_meta_end(&m);
}

static int gcm_run(bool enc, const uint8_t k[FQ_VCP_KEY_LEN], const uint8_t nonce[FQ_VCP_NONCE_LEN],
                   const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n, uint8_t *out,
                   uint8_t tag[FQ_VCP_GCM_TAG_LEN]) {
  int rc = FQ_ECRYPTO, l = 0;
  if (n > INT32_MAX || aad_len > INT32_MAX) return FQ_ETOOLARGE;
  pthread_once(&mac_once, fetch_mac);
  if (!g_gcm) return FQ_ECRYPTO;
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (!c) return -ENOMEM;
  if (!EVP_CipherInit_ex2(c, g_gcm, k, nonce, enc ? 1 : 0, NULL)) goto out;
  if (aad_len && !EVP_CipherUpdate(c, NULL, &l, aad, (int)aad_len)) goto out;
  if (n && !EVP_CipherUpdate(c, out, &l, in, (int)n)) goto out;
  if (enc) {
    if (!EVP_CipherFinal_ex(c, out + l, &l)) goto out;
    if (!EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, FQ_VCP_GCM_TAG_LEN, tag)) goto out;
  } else {
    if (!EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, FQ_VCP_GCM_TAG_LEN, tag)) goto out;
    if (EVP_CipherFinal_ex(c, out + l, &l) != 1) {
      rc = FQ_EVERIFY;
      goto out;
    }
  }
  rc = 0;
out:
  EVP_CIPHER_CTX_free(c);
  return rc;
}

int fq_vcp_gcm_encrypt(const uint8_t k[FQ_VCP_KEY_LEN], const uint8_t nonce[FQ_VCP_NONCE_LEN],
                       const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n,
                       uint8_t *out, uint8_t tag[FQ_VCP_GCM_TAG_LEN]) {
  return gcm_run(true, k, nonce, aad, aad_len, in, n, out, tag);
}

int fq_vcp_gcm_decrypt(const uint8_t k[FQ_VCP_KEY_LEN], const uint8_t nonce[FQ_VCP_NONCE_LEN],
                       const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n,
                       const uint8_t tag[FQ_VCP_GCM_TAG_LEN], uint8_t *out) {
  uint8_t t[FQ_VCP_GCM_TAG_LEN];
  memcpy(t, tag, sizeof t);
  return gcm_run(false, k, nonce, aad, aad_len, in, n, out, t);
}

/* ---------------------------------------------------------------------- */
/* Keys                                                                    */

static int key_wrap(EVP_PKEY *pkey, fq_vcp_key_t **out, fq_err_t *err) {
  int rc = 0;
  char group[64] = "";
  BIGNUM *x = NULL, *y = NULL;
  fq_vcp_key_t *k = NULL;
  if (!EVP_PKEY_is_a(pkey, "EC")) {
    rc = fq_errf(err, FQ_EKEYFILE, "not an EC key: the fleet key must be a P-256 (prime256v1) key");
    goto out;
  }
  if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                      NULL) ||
      strcmp(group, P256_GROUP) != 0) {
    rc = fq_errf(err, FQ_EKEYFILE, "EC key on curve %s: the fleet key must be P-256 (prime256v1)",
                 group[0] ? group : "(unknown)");
    goto out;
  }
  if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) ||
      !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y)) {
    rc = fq_errf(err, FQ_EKEYFILE, "EC key has no public point");
    goto out;
  }
  k = calloc(1, sizeof *k);
  if (!k) {
    rc = -ENOMEM;
    goto out;
  }
  k->pub[0] = 0x04;
  if (BN_bn2binpad(x, k->pub + 1, 32) != 32 || BN_bn2binpad(y, k->pub + 33, 32) != 32) {
    rc = fq_errf(err, FQ_EKEYFILE, "EC public point does not fit P-256");
    goto out;
  }
  k->pkey = pkey;
  pkey = NULL;
  *out = k;
  k = NULL;
out:
  BN_free(x);
  BN_free(y);
  free(k);
  EVP_PKEY_free(pkey);
  return rc;
}

/* Encrypted PEM keys are refused: there is nobody to type a passphrase. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1;
}

int fq_vcp_key_from_pem(const char *pem, size_t len, fq_vcp_key_t **out, fq_err_t *err) {
  *out = NULL;
  if (len > KEY_FILE_MAX) return fq_errf(err, FQ_EKEYFILE, "key PEM larger than %d bytes", KEY_FILE_MAX);
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio) return -ENOMEM;
  EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
  BIO_free(bio);
  if (!pkey) {
    ERR_clear_error();
    return fq_errf(err, FQ_EKEYFILE,
                   "not a PEM private key (expected an unencrypted SEC1 or PKCS#8 P-256 key)");
  }
  return key_wrap(pkey, out, err);
}

int fq_vcp_key_load(const char *path, fq_vcp_key_t **out, fq_err_t *err) {
  char *text = NULL;
  size_t len = 0;
  *out = NULL;
  int rc = fq_check_secret_file(path, err);
  if (rc) return rc;
  rc = fq_read_file(path, KEY_FILE_MAX, &text, &len);
  if (rc == FQ_ETOOLARGE)
    return fq_errf(err, FQ_EKEYFILE, "%s: larger than %d bytes, not a key", path, KEY_FILE_MAX);
  if (rc) return fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(rc));
  rc = fq_vcp_key_from_pem(text, len, out, err);
  if (rc == FQ_EKEYFILE && err) {
    /* Name the file in the message the user sees. */
    char tmp[FQ_ERRMSG_MAX];
    snprintf(tmp, sizeof tmp, "%s", err->msg);
    fq_errf(err, FQ_EKEYFILE, "%s: %s", path, tmp);
  }
  OPENSSL_cleanse(text, len);
  free(text);
  return rc;
}

int fq_vcp_key_generate(fq_vcp_key_t **out, fq_err_t *err) {
  *out = NULL;
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (!pkey) return fq_errf(err, FQ_ECRYPTO, "P-256 key generation failed");
  return key_wrap(pkey, out, err);
}

void fq_vcp_key_destroy(fq_vcp_key_t **k) {
  if (!k || !*k) return;
  EVP_PKEY_free((*k)->pkey);
  free(*k);
  *k = NULL;
}

const uint8_t *fq_vcp_key_public(const fq_vcp_key_t *k) { return k->pub; }

static int bio_to_buf(BIO *bio, fq_buf_t *out) {
  char *p = NULL;
  long n = BIO_get_mem_data(bio, &p);
  if (n < 0) return FQ_ECRYPTO;
  return fq_buf_append(out, p, (size_t)n);
}

int fq_vcp_key_private_pem(const fq_vcp_key_t *k, fq_buf_t *out, fq_err_t *err) {
  BIO *bio = BIO_new(BIO_s_secmem());
  if (!bio) bio = BIO_new(BIO_s_mem());
  if (!bio) return -ENOMEM;
  int rc = PEM_write_bio_PrivateKey(bio, k->pkey, NULL, NULL, 0, NULL, NULL)
               ? bio_to_buf(bio, out)
               : fq_errf(err, FQ_ECRYPTO, "cannot encode the private key");
  BIO_free(bio);
  return rc;
}

int fq_vcp_key_public_pem(const fq_vcp_key_t *k, fq_buf_t *out, fq_err_t *err) {
  BIO *bio = BIO_new(BIO_s_mem());
  if (!bio) return -ENOMEM;
  int rc = PEM_write_bio_PUBKEY(bio, k->pkey) ? bio_to_buf(bio, out)
                                               : fq_errf(err, FQ_ECRYPTO, "cannot encode the public key");
  BIO_free(bio);
  return rc;
}

EVP_PKEY *fq__vcp_pub_from_bytes(const uint8_t pub[FQ_VCP_PUBKEY_LEN]) {
  if (pub[0] != 0x04) return NULL;
  EVP_PKEY *pkey = NULL;
  char group[] = P256_GROUP;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub, FQ_VCP_PUBKEY_LEN),
      OSSL_PARAM_construct_end()};
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  if (!c) return NULL;
  if (EVP_PKEY_fromdata_init(c) != 1 || EVP_PKEY_fromdata(c, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    pkey = NULL;
  EVP_PKEY_CTX_free(c);
  if (!pkey) ERR_clear_error();
  return pkey;
}

int fq_vcp_shared_key(const fq_vcp_key_t *k, const uint8_t peer[FQ_VCP_PUBKEY_LEN],
                      uint8_t out[FQ_VCP_KEY_LEN], fq_err_t *err) {
  int rc = FQ_ECRYPTO;
  uint8_t x[32], digest[EVP_MAX_MD_SIZE];
  size_t xlen = sizeof x;
  unsigned dlen = 0;
  EVP_PKEY_CTX *c = NULL;
  EVP_PKEY *p = fq__vcp_pub_from_bytes(peer);
  if (!p) return fq_errf(err, FQ_ECRYPTO, "peer public key is not a P-256 point");
  c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
  if (!c || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, p) != 1 ||
      EVP_PKEY_derive(c, x, &xlen) != 1 || xlen != sizeof x) {
    rc = fq_errf(err, FQ_ECRYPTO, "ECDH with the peer key failed");
    goto out;
  }
  if (!EVP_Digest(x, sizeof x, digest, &dlen, EVP_sha1(), NULL) || dlen < FQ_VCP_KEY_LEN) {
    rc = fq_errf(err, FQ_ECRYPTO, "SHA1 failed");
    goto out;
  }
  memcpy(out, digest, FQ_VCP_KEY_LEN);
  rc = 0;
out:
  OPENSSL_cleanse(x, sizeof x);
  OPENSSL_cleanse(digest, sizeof digest);
  EVP_PKEY_CTX_free(c);
  EVP_PKEY_free(p);
  if (rc) ERR_clear_error();
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Decoding                                                                */

static int copy_fixed(const ProtobufCBinaryData *b, uint8_t *dst, size_t want, const char *what,
                      fq_err_t *err) {
  if (b->len != want)
    return fq_errf(err, FQ_EPROTO, "%s has %zu bytes, expected %zu", what, b->len, want);
  memcpy(dst, b->data, want);
  return 0;
}

static int copy_upto(const ProtobufCBinaryData *b, uint8_t *dst, size_t cap, size_t *len,
                     const char *what, fq_err_t *err) {
  if (b->len > cap) return fq_errf(err, FQ_EPROTO, "%s has %zu bytes, at most %zu", what, b->len, cap);
  if (b->len) memcpy(dst, b->data, b->len);
  *len = b->len;
  return 0;
}

static void dest_decode(const UniversalMessage__Destination *d, int *domain, bool *has_routing,
                        uint8_t *routing, int *rc, fq_err_t *err) {
  *domain = -1;
  *has_routing = false;
  if (!d || *rc) return;
  if (d->sub_destination_case == UNIVERSAL_MESSAGE__DESTINATION__SUB_DESTINATION_DOMAIN) {
    *domain = (int)d->domain;
  } else if (d->sub_destination_case ==
             UNIVERSAL_MESSAGE__DESTINATION__SUB_DESTINATION_ROUTING_ADDRESS) {
    *rc = copy_fixed(&d->routing_address, routing, FQ_VCP_ROUTING_LEN, "routing_address", err);
    *has_routing = *rc == 0;
  }
}

void fq_vcp_msg_clear(fq_vcp_msg_t *m) {
  if (!m) return;
  if (m->pb_) protobuf_c_message_free_unpacked(m->pb_, NULL);
  memset(m, 0, sizeof *m);
  m->to_domain = m->from_domain = -1;
}

int fq_vcp_msg_decode(const uint8_t *p, size_t n, fq_vcp_msg_t *m, fq_err_t *err) {
  int rc = 0;
  memset(m, 0, sizeof *m);
  m->to_domain = m->from_domain = -1;
  if (n > FQ_VCP_MAX_MSG)
    return fq_errf(err, FQ_EPROTO, "RoutableMessage of %zu bytes exceeds %d", n, FQ_VCP_MAX_MSG);
  UniversalMessage__RoutableMessage *r = universal_message__routable_message__unpack(NULL, n, p);
  if (!r) return fq_errf(err, FQ_EPROTO, "not a RoutableMessage");
  m->pb_ = r;
  dest_decode(r->to_destination, &m->to_domain, &m->has_to_routing, m->to_routing, &rc, err);
  dest_decode(r->from_destination, &m->from_domain, &m->has_from_routing, m->from_routing, &rc,
              err);
  if (rc) goto out;
  switch (r->payload_case) {
  case UNIVERSAL_MESSAGE__ROUTABLE_MESSAGE__PAYLOAD_PROTOBUF_MESSAGE_AS_BYTES:
    if (r->protobuf_message_as_bytes.len > FQ_VCP_MAX_PAYLOAD) {
      rc = fq_errf(err, FQ_EPROTO, "payload of %zu bytes exceeds %d",
                   r->protobuf_message_as_bytes.len, FQ_VCP_MAX_PAYLOAD);
      goto out;
    }
    m->has_payload = true;
    m->payload = r->protobuf_message_as_bytes.data;
    m->payload_len = r->protobuf_message_as_bytes.len;
    break;
  case UNIVERSAL_MESSAGE__ROUTABLE_MESSAGE__PAYLOAD_SESSION_INFO:
    m->has_session_info = true;
    m->session_info = r->session_info.data;
    m->session_info_len = r->session_info.len;
    break;
  case UNIVERSAL_MESSAGE__ROUTABLE_MESSAGE__PAYLOAD_SESSION_INFO_REQUEST:
    m->has_session_info_request = true;
    if ((rc = copy_upto(&r->session_info_request->public_key, m->req_public_key,
                        sizeof m->req_public_key, &m->req_public_key_len, "public_key", err)) ||
        (rc = copy_upto(&r->session_info_request->challenge, m->req_challenge,
                        sizeof m->req_challenge, &m->req_challenge_len, "challenge", err)))
      goto out;
    break;
  default:
    break;
  }
  if (r->signedmessagestatus) {
    m->has_status = true;
    m->op_status = (int)r->signedmessagestatus->operation_status;
    m->fault = (int)r->signedmessagestatus->signed_message_fault;
  }
  const Signatures__SignatureData *sd = r->signature_data;
  if (sd) {
    if (sd->signer_identity &&
        sd->signer_identity->identity_type_case == SIGNATURES__KEY_IDENTITY__IDENTITY_TYPE_PUBLIC_KEY) {
      if ((rc = copy_fixed(&sd->signer_identity->public_key, m->signer_public_key,
                           FQ_VCP_PUBKEY_LEN, "signer public_key", err)))
        goto out;
      m->has_signer_public_key = true;
    }
    switch (sd->sig_type_case) {
    case SIGNATURES__SIGNATURE_DATA__SIG_TYPE_SESSION_INFO_TAG:
      if ((rc = copy_fixed(&sd->session_info_tag->tag, m->session_info_tag, FQ_VCP_TAG_LEN,
                           "session_info_tag", err)))
        goto out;
      m->has_session_info_tag = true;
      break;
    case SIGNATURES__SIGNATURE_DATA__SIG_TYPE_HMAC__PERSONALIZED_DATA: {
      const Signatures__HMACPersonalizedSignatureData *h = sd->hmac_personalized_data;
      if ((rc = copy_fixed(&h->epoch, m->epoch, FQ_VCP_EPOCH_LEN, "epoch", err)) ||
          (rc = copy_fixed(&h->tag, m->tag, FQ_VCP_TAG_LEN, "HMAC tag", err)))
        goto out;
      m->counter = h->counter;
      m->expires_at = h->expires_at;
      m->has_hmac = true;
      break;
    }
    case SIGNATURES__SIGNATURE_DATA__SIG_TYPE_AES__GCM__RESPONSE_DATA: {
      const Signatures__AESGCMResponseSignatureData *g = sd->aes_gcm_response_data;
      if ((rc = copy_fixed(&g->nonce, m->gcm_nonce, FQ_VCP_NONCE_LEN, "response nonce", err)) ||
          (rc = copy_fixed(&g->tag, m->gcm_tag, FQ_VCP_GCM_TAG_LEN, "response tag", err)))
        goto out;
      m->gcm_counter = g->counter;
      m->has_gcm_response = true;
      break;
    }
    default:
      break;
    }
  }
  if ((rc = copy_upto(&r->request_uuid, m->request_uuid, FQ_VCP_UUID_LEN, &m->request_uuid_len,
                      "request_uuid", err)) ||
      (rc = copy_upto(&r->uuid, m->uuid, FQ_VCP_UUID_LEN, &m->uuid_len, "uuid", err)))
    goto out;
  m->flags = r->flags;
out:
  if (rc) fq_vcp_msg_clear(m);
  return rc;
}

int fq_vcp_peek_domain(const uint8_t *p, size_t n) {
  fq_vcp_msg_t m;
  if (fq_vcp_msg_decode(p, n, &m, NULL)) return -1;
  int d = m.to_domain;
  fq_vcp_msg_clear(&m);
  return d;
}

int fq_vcp_session_info_decode(const uint8_t *p, size_t n, fq_vcp_session_info_t *out,
                               fq_err_t *err) {
  int rc = 0;
  memset(out, 0, sizeof *out);
  if (n > 1024) return fq_errf(err, FQ_EPROTO, "SessionInfo of %zu bytes is too large", n);
  Signatures__SessionInfo *si = signatures__session_info__unpack(NULL, n, p);
  if (!si) return fq_errf(err, FQ_EPROTO, "not a SessionInfo");
  out->counter = si->counter;
  out->clock_time = si->clock_time;
  out->status = (int)si->status;
  out->handle = si->handle;
  if (out->status == 0 &&
      ((rc = copy_fixed(&si->publickey, out->public_key, FQ_VCP_PUBKEY_LEN, "SessionInfo publicKey",
                        err)) ||
       (rc = copy_fixed(&si->epoch, out->epoch, FQ_VCP_EPOCH_LEN, "SessionInfo epoch", err))))
    goto out;
  if (out->status != 0) {
    /* A car that does not know our key may leave these out. */
    if (si->publickey.len == FQ_VCP_PUBKEY_LEN) memcpy(out->public_key, si->publickey.data, FQ_VCP_PUBKEY_LEN);
    if (si->epoch.len == FQ_VCP_EPOCH_LEN) memcpy(out->epoch, si->epoch.data, FQ_VCP_EPOCH_LEN);
  }
out:
  signatures__session_info__free_unpacked(si, NULL);
  return rc;
}

int fq_vcp_session_info_encode(const fq_vcp_session_info_t *si, fq_buf_t *out) {
  uint8_t b[160];
  fq__pbw_t w = {b, 0, sizeof b, false};
  static const uint8_t zero_epoch[FQ_VCP_EPOCH_LEN];
  if (si->counter) fq__pb_uint(&w, 1, si->counter);
  if (si->public_key[0]) fq__pb_bytes(&w, 2, si->public_key, FQ_VCP_PUBKEY_LEN);
  if (memcmp(si->epoch, zero_epoch, FQ_VCP_EPOCH_LEN) != 0) fq__pb_bytes(&w, 3, si->epoch, FQ_VCP_EPOCH_LEN);
  if (si->clock_time) fq__pb_fixed32(&w, 4, si->clock_time);
  if (si->status) fq__pb_uint(&w, 5, (uint32_t)si->status);
  if (si->handle) fq__pb_uint(&w, 6, si->handle);
  if (w.bad) return FQ_EINTERNAL;
  return fq_buf_append(out, b, w.len);
}

/* ---------------------------------------------------------------------- */
/* Sessions                                                                */

struct fq_vcp_session {
  const fq_vcp_key_t *key;
  char vin[FQ_VCP_VIN_MAX + 1];
  int domain;
  uint8_t vpub[FQ_VCP_PUBKEY_LEN];
  uint8_t k[FQ_VCP_KEY_LEN];
  EVP_MAC_CTX *cmd_mac; /* keyed with K' = HMAC(K, "authenticated command") */
  uint8_t epoch[FQ_VCP_EPOCH_LEN];
  uint32_t counter;
  int64_t clock_offset; /* local seconds - vehicle seconds */
  /* Vehicle clock of the last session info adopted, to refuse one whose
   * clock goes back in the same epoch; 0 = not known (a restored session). */
  uint32_t clock_time;
  uint8_t routing[FQ_VCP_ROUTING_LEN];
  bool stale;
  /* Random bytes for request uuids, drawn 256 at a time: one RAND_bytes()
   * call costs more than the whole HMAC of a command, but its cost barely
   * grows with the length.  uuids are public, so holding them is fine. */
  uint8_t rnd[256];
  size_t rnd_off;
};

/* Next 16 random bytes for a uuid; 0 or FQ_ECRYPTO. */
static int session_uuid(fq_vcp_session_t *s, uint8_t out[FQ_VCP_UUID_LEN]) {
  if (s->rnd_off + FQ_VCP_UUID_LEN > sizeof s->rnd) {
    if (fq__vcp_random(s->rnd, sizeof s->rnd)) return FQ_ECRYPTO;
    s->rnd_off = 0;
  }
  memcpy(out, s->rnd + s->rnd_off, FQ_VCP_UUID_LEN);
  s->rnd_off += FQ_VCP_UUID_LEN;
  return 0;
}

static int64_t floor_div_1000(int64_t ms) { return ms >= 0 ? ms / 1000 : -((999 - ms) / 1000); }

static int check_vin(const char *vin, fq_err_t *err) {
  size_t n = vin ? strlen(vin) : 0;
  if (n == 0 || n > FQ_VCP_VIN_MAX)
    return fq_errf(err, FQ_EBADPARAM, "VIN must have 1..%d characters", FQ_VCP_VIN_MAX);
  return 0;
}

/* (Re)key a session for the car public key vpub: derive K and K'. */
static int session_rekey(fq_vcp_session_t *s, const uint8_t vpub[FQ_VCP_PUBKEY_LEN], fq_err_t *err) {
  uint8_t k[FQ_VCP_KEY_LEN], kp[32];
  int rc = fq_vcp_shared_key(s->key, vpub, k, err);
  if (rc) return rc;
  if ((rc = fq_vcp_command_key(k, kp))) {
    rc = fq_errf(err, rc, "HMAC failed");
    goto out;
  }
  EVP_MAC_CTX *c = hmac_ctx_new(kp, sizeof kp);
  if (!c) {
    rc = fq_errf(err, FQ_ECRYPTO, "cannot create an HMAC context");
    goto out;
  }
  EVP_MAC_CTX_free(s->cmd_mac);
  s->cmd_mac = c;
  memcpy(s->k, k, sizeof k);
  memcpy(s->vpub, vpub, FQ_VCP_PUBKEY_LEN);
out:
  OPENSSL_cleanse(k, sizeof k);
  OPENSSL_cleanse(kp, sizeof kp);
  return rc;
}

static int session_alloc(const fq_vcp_key_t *key, const char *vin, int domain,
                         const uint8_t *routing, fq_vcp_session_t **out, fq_err_t *err) {
  int rc = check_vin(vin, err);
  if (rc) return rc;
  if (domain != FQ_VCP_DOMAIN_VCSEC && domain != FQ_VCP_DOMAIN_INFOTAINMENT)
    return fq_errf(err, FQ_EBADPARAM, "domain %d is neither VCSEC (2) nor INFOTAINMENT (3)", domain);
  fq_vcp_session_t *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->key = key;
  snprintf(s->vin, sizeof s->vin, "%s", vin);
  s->domain = domain;
  s->rnd_off = sizeof s->rnd; /* empty: filled on first use */
  if (routing) memcpy(s->routing, routing, FQ_VCP_ROUTING_LEN);
  else if ((rc = fq__vcp_random(s->routing, FQ_VCP_ROUTING_LEN))) {
    free(s);
    return fq_errf(err, rc, "no random bytes");
  }
  *out = s;
  return 0;
}

void fq_vcp_session_destroy(fq_vcp_session_t **sp) {
  if (!sp || !*sp) return;
  fq_vcp_session_t *s = *sp;
  EVP_MAC_CTX_free(s->cmd_mac);
  OPENSSL_cleanse(s, sizeof *s);
  free(s);
  *sp = NULL;
}

int fq_vcp_session_from_info(const fq_vcp_key_t *key, const char *vin, int domain,
                             const uint8_t *info, size_t info_len, int64_t now_ms,
                             const uint8_t *routing, fq_vcp_session_t **out, fq_err_t *err) {
  fq_vcp_session_info_t si;
  fq_vcp_session_t *s = NULL;
  *out = NULL;
  int rc = fq_vcp_session_info_decode(info, info_len, &si, err);
  if (rc) return rc;
  if (si.status != 0)
    return fq_errf(err, FQ_ENOTPAIRED, "vehicle rejected request: your public key has not been "
                                       "paired with the vehicle");
  if ((rc = session_alloc(key, vin, domain, routing, &s, err))) return rc;
  if ((rc = session_rekey(s, si.public_key, err))) goto out;
  memcpy(s->epoch, si.epoch, FQ_VCP_EPOCH_LEN);
  s->counter = si.counter;
  s->clock_offset = floor_div_1000(now_ms) - (int64_t)si.clock_time;
  s->clock_time = si.clock_time;
  *out = s;
  s = NULL;
out:
  fq_vcp_session_destroy(&s);
  return rc;
}

int fq_vcp_session_domain(const fq_vcp_session_t *s) { return s->domain; }
uint32_t fq_vcp_session_counter(const fq_vcp_session_t *s) { return s->counter; }
const uint8_t *fq_vcp_session_epoch(const fq_vcp_session_t *s) { return s->epoch; }
int64_t fq_vcp_session_clock_offset(const fq_vcp_session_t *s) { return s->clock_offset; }
const uint8_t *fq_vcp_session_k(const fq_vcp_session_t *s) { return s->k; }
bool fq_vcp_session_stale(const fq_vcp_session_t *s) { return s->stale; }
void fq_vcp_session_set_routing(fq_vcp_session_t *s, const uint8_t routing[FQ_VCP_ROUTING_LEN]) {
  memcpy(s->routing, routing, FQ_VCP_ROUTING_LEN);
}

/* Blob layout, version 1 (all integers big endian):
 *   "FV" 0x01 | domain u8 | vin_len u8 | vin | car public key (65) |
 *   epoch (16) | counter u32 | clock_offset i64 | routing (16) | stale u8 */
#define BLOB_MAGIC0 'F'
#define BLOB_MAGIC1 'V'
#define BLOB_VERSION 1

size_t fq_vcp_session_save(const fq_vcp_session_t *s, uint8_t out[FQ_VCP_SESSION_BLOB_MAX]) {
  return fq_vcp_session_save_ahead(s, 0, out);
}

size_t fq_vcp_session_save_ahead(const fq_vcp_session_t *s, uint32_t ahead,
                                 uint8_t out[FQ_VCP_SESSION_BLOB_MAX]) {
  size_t vl = strlen(s->vin), o = 0;
  uint32_t counter = s->counter > UINT32_MAX - ahead ? UINT32_MAX : s->counter + ahead;
  out[o++] = BLOB_MAGIC0;
  out[o++] = BLOB_MAGIC1;
  out[o++] = BLOB_VERSION;
  out[o++] = (uint8_t)s->domain;
  out[o++] = (uint8_t)vl;
  memcpy(out + o, s->vin, vl);
  o += vl;
  memcpy(out + o, s->vpub, FQ_VCP_PUBKEY_LEN);
  o += FQ_VCP_PUBKEY_LEN;
  memcpy(out + o, s->epoch, FQ_VCP_EPOCH_LEN);
  o += FQ_VCP_EPOCH_LEN;
  fq_put_be32(out + o, counter);
  o += 4;
  fq_put_be64(out + o, (uint64_t)s->clock_offset);
  o += 8;
  memcpy(out + o, s->routing, FQ_VCP_ROUTING_LEN);
  o += FQ_VCP_ROUTING_LEN;
  out[o++] = s->stale ? 1 : 0;
  return o;
}

int fq_vcp_session_restore(const fq_vcp_key_t *key, const uint8_t *p, size_t n,
                           fq_vcp_session_t **out, fq_err_t *err) {
  fq_vcp_session_t *s = NULL;
  char vin[FQ_VCP_VIN_MAX + 1];
  int rc;
  *out = NULL;
  if (n < 5 || p[0] != BLOB_MAGIC0 || p[1] != BLOB_MAGIC1 || p[2] != BLOB_VERSION)
    return fq_errf(err, FQ_EPROTO, "not a version %d session record", BLOB_VERSION);
  size_t vl = p[4];
  if (vl == 0 || vl > FQ_VCP_VIN_MAX || n != 5 + vl + FQ_VCP_PUBKEY_LEN + FQ_VCP_EPOCH_LEN + 4 + 8 +
                                                    FQ_VCP_ROUTING_LEN + 1)
    return fq_errf(err, FQ_EPROTO, "session record of %zu bytes is malformed", n);
  memcpy(vin, p + 5, vl);
  vin[vl] = 0;
  if (strlen(vin) != vl) return fq_errf(err, FQ_EPROTO, "session record VIN holds a NUL");
  const uint8_t *q = p + 5 + vl;
  const uint8_t *routing = q + FQ_VCP_PUBKEY_LEN + FQ_VCP_EPOCH_LEN + 12;
  if ((rc = session_alloc(key, vin, p[3], routing, &s, err))) return rc;
  if ((rc = session_rekey(s, q, err))) goto out;
  q += FQ_VCP_PUBKEY_LEN;
  memcpy(s->epoch, q, FQ_VCP_EPOCH_LEN);
  q += FQ_VCP_EPOCH_LEN;
  s->counter = fq_get_be32(q);
  s->clock_offset = (int64_t)fq_get_be64(q + 4);
  s->stale = routing[FQ_VCP_ROUTING_LEN] != 0;
  *out = s;
  s = NULL;
out:
  fq_vcp_session_destroy(&s);
  return rc;
}

int fq_vcp_session_resync(fq_vcp_session_t *s, const fq_vcp_request_t *req,
                          const uint8_t *info, size_t info_len,
                          const uint8_t tag[FQ_VCP_TAG_LEN], int64_t now_ms, fq_err_t *err) {
  fq_vcp_session_info_t si;
  uint8_t k[FQ_VCP_KEY_LEN], want[FQ_VCP_TAG_LEN];
  int rc = fq_vcp_session_info_decode(info, info_len, &si, err);
  if (rc) return rc;
  if (si.status != 0)
    return fq_errf(err, FQ_ENOTPAIRED, "vehicle rejected request: your public key has not been "
                                       "paired with the vehicle");
  /* A late answer would set the clock offset off by its delay. */
  if (req->sent_ms && now_ms - req->sent_ms > FQ_VCP_MAX_LATENCY_MS)
    return fq_errf(err, FQ_EEXPIRED,
                   "session info answers a request sent %lld ms ago (over %d ms): discarded",
                   (long long)(now_ms - req->sent_ms), FQ_VCP_MAX_LATENCY_MS);
  bool new_key = memcmp(si.public_key, s->vpub, FQ_VCP_PUBKEY_LEN) != 0;
  if (new_key) {
    if ((rc = fq_vcp_shared_key(s->key, si.public_key, k, err))) return rc;
  } else {
    memcpy(k, s->k, sizeof k);
  }
  rc = fq_vcp_session_info_tag(k, s->vin, req->uuid, FQ_VCP_UUID_LEN, info, info_len, want);
  OPENSSL_cleanse(k, sizeof k);
  if (rc) return fq_errf(err, rc, "HMAC failed");
  if (CRYPTO_memcmp(want, tag, FQ_VCP_TAG_LEN) != 0)
    return fq_errf(err, FQ_EVERIFY, "session info tag does not verify (wrong VIN, key or challenge)");
  bool same_epoch = !new_key && memcmp(si.epoch, s->epoch, FQ_VCP_EPOCH_LEN) == 0;
  /* Within an epoch the car's clock only goes forward: older info is a
   * replay or a reordered answer, and would move the clock back. */
  if (same_epoch && si.clock_time < s->clock_time)
    return fq_errf(err, FQ_EEXPIRED,
                   "session info clock goes back in the same epoch (%u < %u): discarded",
                   (unsigned)si.clock_time, (unsigned)s->clock_time);
  if (new_key && (rc = session_rekey(s, si.public_key, err))) return rc;
  if (!same_epoch) {
    memcpy(s->epoch, si.epoch, FQ_VCP_EPOCH_LEN);
    s->counter = si.counter;
  } else if (si.counter > s->counter) {
    s->counter = si.counter;
  }
  s->clock_offset = floor_div_1000(now_ms) - (int64_t)si.clock_time;
  s->clock_time = si.clock_time;
  s->stale = false;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Handshake                                                               */

int fq_vcp_handshake_request(const fq_vcp_key_t *key, int domain, const uint8_t *routing,
                             const uint8_t *uuid, int64_t now_ms, fq_vcp_request_t *req,
                             fq_buf_t *out, fq_err_t *err) {
  uint8_t b[192];
  fq__pbw_t w = {b, 0, sizeof b, false};
  memset(req, 0, sizeof *req);
  req->domain = domain;
  req->is_handshake = true;
  req->sent_ms = now_ms;
  if (routing) memcpy(req->routing_address, routing, FQ_VCP_ROUTING_LEN);
  else if (fq__vcp_random(req->routing_address, FQ_VCP_ROUTING_LEN))
    return fq_errf(err, FQ_ECRYPTO, "no random bytes");
  if (uuid) memcpy(req->uuid, uuid, FQ_VCP_UUID_LEN);
  else if (fq__vcp_random(req->uuid, FQ_VCP_UUID_LEN))
    return fq_errf(err, FQ_ECRYPTO, "no random bytes");
  fq__pb_submsg(&w, 6, 2);
  fq__pb_uint(&w, 1, (uint32_t)domain);
  fq__pb_submsg(&w, 7, 2 + FQ_VCP_ROUTING_LEN);
  fq__pb_bytes(&w, 2, req->routing_address, FQ_VCP_ROUTING_LEN);
  fq__pb_submsg(&w, 14, 2 + FQ_VCP_PUBKEY_LEN);
  fq__pb_bytes(&w, 1, key->pub, FQ_VCP_PUBKEY_LEN);
  fq__pb_bytes(&w, 51, req->uuid, FQ_VCP_UUID_LEN);
  if (w.bad) return fq_errf(err, FQ_EINTERNAL, "handshake buffer too small");
  return fq_buf_append(out, b, w.len);
}

/* Check that a decoded reply answers req. */
static int reply_matches(const fq_vcp_msg_t *m, const fq_vcp_request_t *req, fq_err_t *err) {
  if (m->request_uuid_len != FQ_VCP_UUID_LEN ||
      memcmp(m->request_uuid, req->uuid, FQ_VCP_UUID_LEN) != 0)
    return fq_errf(err, FQ_EPROTO, "reply does not answer our request (request_uuid mismatch)");
  if (m->from_domain >= 0 && m->from_domain != req->domain)
    return fq_errf(err, FQ_EPROTO, "reply from domain %d, request went to domain %d",
                   m->from_domain, req->domain);
  return 0;
}

int fq_vcp_handshake_finish(const fq_vcp_key_t *key, const char *vin,
                            const fq_vcp_request_t *req, const uint8_t *reply, size_t len,
                            int64_t now_ms, fq_vcp_session_t **out, fq_vcp_outcome_t *o,
                            fq_err_t *err) {
  fq_vcp_msg_t m;
  fq_vcp_session_info_t si;
  fq_vcp_session_t *s = NULL;
  *out = NULL;
  int rc = fq_vcp_msg_decode(reply, len, &m, err);
  if (rc) {
    outcome_set(o, FQ_VCP_RETRY, -1, rc, "undecodable handshake reply");
    return rc;
  }
  if ((rc = reply_matches(&m, req, err))) {
    outcome_set(o, FQ_VCP_RETRY, -1, rc, "handshake reply does not match the request");
    goto out;
  }
  if (m.has_status && m.fault != 0) {
    fq_vcp_outcome_t tmp;
    fq_vcp_classify_fault(m.fault, &tmp);
    if (o) *o = tmp;
    rc = fq_errf(err, tmp.error, "%s", tmp.reason);
    goto out;
  }
  if (!m.has_session_info || !m.has_session_info_tag) {
    if (m.has_status && m.op_status == FQ_VCP_OP_WAIT) {
      outcome_set(o, FQ_VCP_RETRY, 0, FQ_EBUSY, "vehicle busy or finishing wake-up");
      rc = fq_errf(err, FQ_EBUSY, "vehicle busy or finishing wake-up");
    } else {
      outcome_set(o, FQ_VCP_RETRY, -1, FQ_EPROTO, "handshake reply without session info");
      rc = fq_errf(err, FQ_EPROTO, "handshake reply without session info");
    }
    goto out;
  }
  if ((rc = fq_vcp_session_info_decode(m.session_info, m.session_info_len, &si, err))) {
    outcome_set(o, FQ_VCP_FAIL, -1, rc, err ? err->msg : "bad session info");
    goto out;
  }
  if (si.status != 0) {
    const char *r = fault_table[FQ_VCP_FAULT_UNKNOWN_KEY_ID].reason;
    outcome_set(o, FQ_VCP_FAIL, FQ_VCP_FAULT_UNKNOWN_KEY_ID, FQ_ENOTPAIRED, r);
    rc = fq_errf(err, FQ_ENOTPAIRED, "%s", r);
    goto out;
  }
  /* The rule of fq_vcp_session_resync, as in Tesla's client: a late answer
   * would set the clock offset off by its delay.  A handshake has no side
   * effect on the car, so the caller simply asks again. */
  if (req->sent_ms && now_ms - req->sent_ms > FQ_VCP_MAX_LATENCY_MS) {
    rc = fq_errf(err, FQ_EEXPIRED,
                 "handshake answer came %lld ms after the request (over %d ms): discarded",
                 (long long)(now_ms - req->sent_ms), FQ_VCP_MAX_LATENCY_MS);
    outcome_set(o, FQ_VCP_RETRY, -1, rc, "handshake answer came too late: discarded");
    goto out;
  }
  if ((rc = session_alloc(key, vin, req->domain, req->routing_address, &s, err)) ||
      (rc = session_rekey(s, si.public_key, err))) {
    outcome_set(o, FQ_VCP_FAIL, -1, rc, err ? err->msg : "cannot derive the session key");
    goto out;
  }
  uint8_t want[FQ_VCP_TAG_LEN];
  if ((rc = fq_vcp_session_info_tag(s->k, vin, req->uuid, FQ_VCP_UUID_LEN, m.session_info,
                                    m.session_info_len, want))) {
    outcome_set(o, FQ_VCP_FAIL, -1, rc, "HMAC failed");
    goto out;
  }
  if (CRYPTO_memcmp(want, m.session_info_tag, FQ_VCP_TAG_LEN) != 0) {
    rc = fq_errf(err, FQ_EVERIFY, "session info tag does not verify (wrong VIN, key or challenge)");
    outcome_set(o, FQ_VCP_FAIL, -1, rc, err ? err->msg : "session info tag does not verify");
    goto out;
  }
  memcpy(s->epoch, si.epoch, FQ_VCP_EPOCH_LEN);
  s->counter = si.counter;
  s->clock_offset = floor_div_1000(now_ms) - (int64_t)si.clock_time;
  s->clock_time = si.clock_time;
  outcome_set(o, FQ_VCP_OK, m.has_status ? m.fault : -1, 0, "");
  *out = s;
  s = NULL;
out:
  fq_vcp_session_destroy(&s);
  fq_vcp_msg_clear(&m);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Signing                                                                 */

/* Worst-case bytes of a signed RoutableMessage around a payload of n. */
#define SIGNED_OVERHEAD 320

int fq_vcp_sign(fq_vcp_session_t *s, const uint8_t *payload, size_t len,
                const fq_vcp_sign_opts_t *opts, fq_vcp_request_t *req, fq_buf_t *out,
                fq_err_t *err) {
  uint8_t meta[128];
  int rc;
  if (len > FQ_VCP_MAX_PAYLOAD)
    return fq_errf(err, FQ_ETOOLARGE, "payload of %zu bytes exceeds %d", len, FQ_VCP_MAX_PAYLOAD);
  if (!s->cmd_mac) return fq_errf(err, FQ_EINTERNAL, "session has no key");
  if (s->counter == UINT32_MAX)
    return fq_errf(err, FQ_ERANGE, "session counter exhausted; a new handshake is needed");

  /* Vehicle time and expiry.  The deadline bounds expires_at so that the
   * car itself refuses the command once the caller has given up on it. */
  int64_t vnow = floor_div_1000(opts->now_ms) - s->clock_offset;
  int64_t life = opts->lifetime_s ? opts->lifetime_s : FQ_VCP_DEFAULT_LIFETIME_S;
  int64_t exp = vnow + life;
  if (opts->deadline_ms) {
    int64_t vdl = floor_div_1000(opts->deadline_ms) - s->clock_offset;
    if (vdl < exp) exp = vdl;
    if (exp <= vnow)
      return fq_errf(err, FQ_EEXPIRED, "deadline already passed in vehicle time");
  }
  if (exp < 0 || exp > (int64_t)UINT32_MAX)
    return fq_errf(err, FQ_ERANGE, "expires_at %lld outside the vehicle clock range", (long long)exp);

  /* Reserve the output first so that a failure leaves the counter alone. */
  if ((rc = fq_buf_reserve(out, len + SIGNED_OVERHEAD))) return rc;

  uint32_t counter = s->counter + 1, expires_at = (uint32_t)exp;
  uint32_t flags = FQ_VCP_FLAG_ENCRYPT_RESPONSE;
  size_t ml = fq__vcp_command_meta(s->domain, s->vin, s->epoch, expires_at, counter, flags, meta,
                                   sizeof meta);
  if (!ml) return fq_errf(err, FQ_EINTERNAL, "metadata does not fit");
  uint8_t tag[FQ_VCP_TAG_LEN];
  size_t tl = 0;
  if (!EVP_MAC_init(s->cmd_mac, NULL, 0, NULL) || !EVP_MAC_update(s->cmd_mac, meta, ml) ||
      (len && !EVP_MAC_update(s->cmd_mac, payload, len)) ||
      !EVP_MAC_final(s->cmd_mac, tag, &tl, sizeof tag) || tl != sizeof tag)
    return fq_errf(err, FQ_ECRYPTO, "HMAC failed");

  uint8_t uuid[FQ_VCP_UUID_LEN];
  if (opts->uuid) memcpy(uuid, opts->uuid, FQ_VCP_UUID_LEN);
  else if (session_uuid(s, uuid))
    return fq_errf(err, FQ_ECRYPTO, "no random bytes");

  /* Pack the RoutableMessage in field-number order, as protobuf-c would:
   * to_destination(6), from_destination(7), protobuf_message_as_bytes(10),
   * signature_data(13), uuid(51), flags(52). */
  size_t hmac_len = 2 + FQ_VCP_EPOCH_LEN + 1 + fq__varint_len(counter) +
                    (expires_at ? 5 : 0) + 2 + FQ_VCP_TAG_LEN;
  size_t sig_len = 2 + (2 + FQ_VCP_PUBKEY_LEN) + 1 + fq__varint_len(hmac_len) + hmac_len;
  fq__pbw_t w = {out->data + out->len, 0, out->alloc - out->len, false};
  fq__pb_submsg(&w, 6, 2);
  fq__pb_uint(&w, 1, (uint32_t)s->domain);
  fq__pb_submsg(&w, 7, 2 + FQ_VCP_ROUTING_LEN);
  fq__pb_bytes(&w, 2, s->routing, FQ_VCP_ROUTING_LEN);
  fq__pb_bytes(&w, 10, payload, len);
  fq__pb_submsg(&w, 13, sig_len);
  fq__pb_submsg(&w, 1, 2 + FQ_VCP_PUBKEY_LEN);
  fq__pb_bytes(&w, 1, s->key->pub, FQ_VCP_PUBKEY_LEN);
  fq__pb_submsg(&w, 8, hmac_len);
  fq__pb_bytes(&w, 1, s->epoch, FQ_VCP_EPOCH_LEN);
  fq__pb_uint(&w, 2, counter);
  if (expires_at) fq__pb_fixed32(&w, 3, expires_at);
  fq__pb_bytes(&w, 4, tag, FQ_VCP_TAG_LEN);
  fq__pb_bytes(&w, 51, uuid, FQ_VCP_UUID_LEN);
  fq__pb_uint(&w, 52, flags);
  if (w.bad) return fq_errf(err, FQ_EINTERNAL, "signed message buffer too small");
  out->len += w.len;

  s->counter = counter;
  req->domain = s->domain;
  memcpy(req->uuid, uuid, sizeof uuid);
  memcpy(req->routing_address, s->routing, FQ_VCP_ROUTING_LEN);
  req->is_handshake = false;
  req->counter = counter;
  req->expires_at = expires_at;
  req->flags = flags;
  memcpy(req->tag, tag, sizeof tag);
  req->sent_ms = opts->now_ms;
  req->nseen = 0;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Replies                                                                 */

static int refuse(fq_vcp_outcome_t *o, int fault, int rc, fq_err_t *err) {
  char why[FQ_VCP_REASON_MAX];
  snprintf(why, sizeof why, "reply refused: %.180s", err && err->msg[0] ? err->msg : fq_strerror(rc));
  outcome_set(o, FQ_VCP_UNKNOWN, fault, rc, why);
  return rc;
}

int fq_vcp_open_reply(fq_vcp_session_t *s, fq_vcp_request_t *req, const uint8_t *reply,
                      size_t len, int64_t now_ms, fq_buf_t *app, fq_vcp_outcome_t *o,
                      fq_err_t *err) {
  fq_vcp_msg_t m;
  fq_vcp_outcome_t tmp;
  uint8_t *plain = NULL;
  int rc = fq_vcp_msg_decode(reply, len, &m, err);
  if (!o) o = &tmp;
  if (rc) return refuse(o, -1, rc, err);
  if ((rc = reply_matches(&m, req, err))) {
    refuse(o, -1, rc, err);
    goto out;
  }
  int fault = m.has_status ? m.fault : -1;

  /* Piggy-backed session info: apply it first, so a retry signs with the
   * car's current epoch, counter and clock. */
  bool resynced = false;
  if (m.has_session_info && m.has_session_info_tag) {
    fq_err_t e2;
    fq_err_clear(&e2);
    int r2 = fq_vcp_session_resync(s, req, m.session_info, m.session_info_len,
                                   m.session_info_tag, now_ms, &e2);
    if (r2 == FQ_ENOTPAIRED) {
      outcome_set(o, FQ_VCP_FAIL, FQ_VCP_FAULT_UNKNOWN_KEY_ID, FQ_ENOTPAIRED,
                  fault_table[FQ_VCP_FAULT_UNKNOWN_KEY_ID].reason);
      goto out;
    }
    resynced = r2 == 0;
  }

  if (m.has_status && m.fault != 0) {
    fq_vcp_classify_fault(m.fault, o);
    if (o->action == FQ_VCP_RESYNC_RETRY && !resynced) {
      /* Nothing trustworthy to resync from: the caller handshakes again. */
      s->stale = true;
      size_t l = strlen(o->reason);
      const char *tail = "; new handshake needed";
      const char *p = strstr(o->reason, "; session resynced");
      if (!p) p = strstr(o->reason, "; clock resynced");
      if (p) l = (size_t)(p - o->reason);
      snprintf(o->reason + l, sizeof o->reason - l, "%s", tail);
    }
    goto out;
  }
  if (m.has_status && m.op_status == FQ_VCP_OP_WAIT) {
    outcome_set(o, FQ_VCP_RETRY, 0, FQ_EBUSY, "vehicle busy or finishing wake-up");
    goto out;
  }
  if (m.has_status && m.op_status == FQ_VCP_OP_ERROR) {
    /* The request was authentic and the car says neither what went wrong
     * nor that it did nothing: it may have run the command. */
    outcome_set(o, FQ_VCP_UNKNOWN, 0, FQ_EFAULT,
                "vehicle reported an error without a fault code");
    goto out;
  }

  if (!m.has_gcm_response && (req->flags & FQ_VCP_FLAG_ENCRYPT_RESPONSE)) {
    /* We asked for an encrypted response, and the car encrypts every answer
     * to such a request that is not a fault: a plaintext "success" is
     * nobody's authenticated word (Fleet API or anything on the path could
     * have written it).  Tesla's client passes plaintext replies through;
     * we do not count one as success.  Our request was authentic and may
     * have reached the car, so the outcome is unknown (the caller may send
     * an idempotent command again). */
    rc = fq_errf(err, FQ_EVERIFY,
                 "plaintext reply without a fault to a request that asked for an encrypted "
                 "response: not authenticated");
    refuse(o, fault, rc, err);
    goto out;
  }
  const uint8_t *appb = m.payload;
  size_t appn = m.has_payload ? m.payload_len : 0;
  if (m.has_gcm_response) {
    for (size_t i = 0; i < req->nseen; i++)
      if (req->seen[i] == m.gcm_counter) {
        rc = fq_errf(err, FQ_EREPLAY, "reply counter %u already seen for this request",
                     m.gcm_counter);
        refuse(o, fault, rc, err);
        goto out;
      }
    uint8_t h[33], rmeta[160], aad[32];
    unsigned aadl = 0;
    size_t hl = fq_vcp_request_hash(req->domain, req->tag, h);
    size_t rl = fq_vcp_response_metadata(m.from_domain >= 0 ? m.from_domain : req->domain, s->vin,
                                         m.gcm_counter, m.flags, h, hl,
                                         (uint32_t)(fault > 0 ? fault : 0), rmeta, sizeof rmeta);
    if (!rl || !fq__vcp_sha256() || !EVP_Digest(rmeta, rl, aad, &aadl, fq__vcp_sha256(), NULL)) {
      rc = fq_errf(err, FQ_ECRYPTO, "cannot build the response metadata");
      refuse(o, fault, rc, err);
      goto out;
    }
    plain = malloc(appn ? appn : 1);
    if (!plain) {
      rc = -ENOMEM;
      refuse(o, fault, rc, err);
      goto out;
    }
    rc = fq_vcp_gcm_decrypt(s->k, m.gcm_nonce, aad, sizeof aad, appb, appn, m.gcm_tag, plain);
    if (rc) {
      fq_errf(err, rc, rc == FQ_EVERIFY ? "encrypted reply does not authenticate"
                                        : "AES-GCM decryption failed");
      refuse(o, fault, rc, err);
      goto out;
    }
    if (req->nseen < FQ_VCP_SEEN_MAX) req->seen[req->nseen++] = m.gcm_counter;
    else {
      memmove(req->seen, req->seen + 1, (FQ_VCP_SEEN_MAX - 1) * sizeof req->seen[0]);
      req->seen[FQ_VCP_SEEN_MAX - 1] = m.gcm_counter;
    }
    appb = plain;
  }
  if (app && appn && (rc = fq_buf_append(app, appb, appn))) {
    refuse(o, fault, rc, err);
    goto out;
  }
  rc = fq_vcp_classify_app_reply(req->domain, appb, appn, o);
  o->fault = fault;
  if (rc) {
    /* The reply was genuine, so the car got the command, but what it says
     * about it cannot be read: the command may have run.  This is a
     * classification (unknown), not a refusal of the reply. */
    fq_errf(err, rc, "%s", o->reason);
    char why[FQ_VCP_REASON_MAX];
    snprintf(why, sizeof why, "%.120s: the vehicle's answer cannot be read", o->reason);
    outcome_set(o, FQ_VCP_UNKNOWN, fault, rc, why);
  }
  rc = 0;
out:
  free(plain);
  fq_vcp_msg_clear(&m);
  return rc;
}
