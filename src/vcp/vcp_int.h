/*
 * Internals of the vcp part, for vcp.c and the part's unit test: the
 * fleet key's innards and the helpers below (plus the protobuf writer and
 * vcp_car_api.h, included for them).  Nothing outside src/vcp includes
 * this header; the car side in src/sim gets what it needs through
 * vcp_car_api.h.
 */
#ifndef FQ_VCP_INT_H
#define FQ_VCP_INT_H

#include <string.h>

#include <openssl/evp.h>

#include "pbw.h"
#include "vcp.h"
#include "vcp_car_api.h"

struct fq_vcp_key {
  EVP_PKEY *pkey;
  uint8_t pub[FQ_VCP_PUBKEY_LEN];
};

/* Build a P-256 public EVP_PKEY from 65 bytes; NULL when not a point. */
EVP_PKEY *fq__vcp_pub_from_bytes(const uint8_t pub[FQ_VCP_PUBKEY_LEN]);

/* Session-info metadata for (vin, challenge) into out; returns length. */
size_t fq__vcp_session_info_meta(const char *vin, const uint8_t *challenge, size_t clen,
                                 uint8_t *out, size_t cap);

#endif
