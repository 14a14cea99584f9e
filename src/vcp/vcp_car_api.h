/*
 * vcp_car_api: what the car side of the Vehicle Command Protocol
 * (src/sim/vcp_vehicle.c) needs from this part beyond the public vcp.h.
 * This is the whole cross-part interface between src/vcp and src/sim:
 * the car verifies a command with the very metadata builder and HMAC the
 * fleet side signs with, so the two can never drift apart, and it draws
 * random bytes and SHA-256 from the same fetched OpenSSL objects.
 * Nothing here exposes a key's innards.  Thread safe.  Not a public API:
 * only src/vcp and src/sim include it (and vcp's own unit test).
 */
#ifndef FQ_VCP_CAR_API_H
#define FQ_VCP_CAR_API_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "vcp.h"

/* Random bytes from OpenSSL's DRBG; 0 or FQ_ECRYPTO. */
int fq__vcp_random(uint8_t *p, size_t n);

/* HMAC-SHA256(key, a || b) one-shot into out; b may be NULL when blen is
 * 0.  0 or FQ_ECRYPTO. */
int fq__vcp_hmac(const uint8_t *key, size_t keylen, const uint8_t *a, size_t alen,
                 const uint8_t *b, size_t blen, uint8_t out[32]);

/* Command metadata M for HMAC_PERSONALIZED (signature type, domain, VIN,
 * epoch, expires_at, counter, and flags when non-zero) into out[cap);
 * returns its length, or 0 when it does not fit. */
size_t fq__vcp_command_meta(int domain, const char *vin, const uint8_t epoch[FQ_VCP_EPOCH_LEN],
                            uint32_t expires_at, uint32_t counter, uint32_t flags, uint8_t *out,
                            size_t cap);

/* SHA-256, fetched once per process (NULL if the provider lacks it).
 * Owned by this part: never free it. */
const EVP_MD *fq__vcp_sha256(void);

#endif
