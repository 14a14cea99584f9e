/*
 * Internals shared by vcp.c (client side), vcp_vehicle.c (car side) and
 * vcp_app.c (application payloads): a tiny protobuf writer for the
 * messages we pack by hand on hot paths, and the fleet key's innards.
 * Not a public API.
 */
#ifndef FQ_VCP_INT_H
#define FQ_VCP_INT_H

#include <string.h>

#include <openssl/evp.h>

#include "vcp.h"

struct fq_vcp_key {
  EVP_PKEY *pkey;
  uint8_t pub[FQ_VCP_PUBKEY_LEN];
};

/* Protobuf writer over a fixed array: p[len..cap).  Overflow sets `bad`;
 * callers size the array for the worst case and check once at the end. */
typedef struct fq__pbw {
  uint8_t *p;
  size_t len, cap;
  bool bad;
} fq__pbw_t;

static inline size_t fq__varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static inline void fq__pb_raw(fq__pbw_t *w, const void *v, size_t n) {
  if (w->bad || n > w->cap - w->len) {
    w->bad = true;
    return;
  }
  if (n) memcpy(w->p + w->len, v, n);
  w->len += n;
}

static inline void fq__pb_varint(fq__pbw_t *w, uint64_t v) {
  uint8_t t[10];
  size_t n = 0;
  while (v >= 0x80) {
    t[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  t[n++] = (uint8_t)v;
  fq__pb_raw(w, t, n);
}

/* Field key: (field << 3) | wire type (0 varint, 2 bytes, 5 fixed32). */
static inline void fq__pb_key(fq__pbw_t *w, uint32_t field, unsigned wt) {
  fq__pb_varint(w, ((uint64_t)field << 3) | wt);
}

static inline void fq__pb_bytes(fq__pbw_t *w, uint32_t field, const void *v, size_t n) {
  fq__pb_key(w, field, 2);
  fq__pb_varint(w, n);
  fq__pb_raw(w, v, n);
}

/* Start a length-delimited field whose length is known in advance. */
static inline void fq__pb_submsg(fq__pbw_t *w, uint32_t field, size_t n) {
  fq__pb_key(w, field, 2);
  fq__pb_varint(w, n);
}

static inline void fq__pb_fixed32(fq__pbw_t *w, uint32_t field, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  fq__pb_key(w, field, 5);
  fq__pb_raw(w, b, 4);
}

static inline void fq__pb_uint(fq__pbw_t *w, uint32_t field, uint64_t v) {
  fq__pb_key(w, field, 0);
  fq__pb_varint(w, v);
}

/* Random bytes from OpenSSL's DRBG; 0 or FQ_ECRYPTO. */
int fq__vcp_random(uint8_t *p, size_t n);

/* HMAC-SHA256 one-shot; 0 or FQ_ECRYPTO. */
int fq__vcp_hmac(const uint8_t *key, size_t keylen, const uint8_t *a, size_t alen,
                 const uint8_t *b, size_t blen, uint8_t out[32]);

/* Build a P-256 public EVP_PKEY from 65 bytes; NULL when not a point. */
EVP_PKEY *fq__vcp_pub_from_bytes(const uint8_t pub[FQ_VCP_PUBKEY_LEN]);

/* Session-info metadata for (vin, challenge) into out; returns length. */
size_t fq__vcp_session_info_meta(const char *vin, const uint8_t *challenge, size_t clen,
                                 uint8_t *out, size_t cap);

/* Command metadata M for HMAC_PERSONALIZED; returns length or 0. */
size_t fq__vcp_command_meta(int domain, const char *vin, const uint8_t epoch[FQ_VCP_EPOCH_LEN],
                            uint32_t expires_at, uint32_t counter, uint32_t flags, uint8_t *out,
                            size_t cap);

/* SHA-256, fetched once per process (NULL if the provider lacks it). */
#include <openssl/evp.h>
const EVP_MD *fq__vcp_sha256(void);

#endif
