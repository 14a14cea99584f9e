/*
 * The car's side of the Vehicle Command Protocol (see vcp_car.h), for the
 * Fleet API simulator: a domain of a simulated car answers handshakes,
 * verifies HMAC-personalized commands with the rules a real car applies
 * (epoch, tag, expiry, anti-replay counter window), and builds fault and
 * encrypted replies.  Written against the same primitives as the client
 * side (vcp.h, and vcp_car_api.h for the command metadata and HMAC), so a
 * test that signs with one and verifies with the other checks both against
 * the spec's vectors.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "pbw.h"
#include "vcp.h"
#include "vcp_car.h"
#include "vcp_car_api.h"

#define MAX_CLIENTS 64
#define MAX_ALIASES 16
#define WINDOW 32
/* A command may not claim to live longer than this (2^30 s). */
#define MAX_AHEAD ((int64_t)1 << 30)
/* Nor longer than an hour (TIME_TO_LIVE_TOO_LONG): clients sign for
 * seconds, so only a wrong clock offset comes near it. */
#define MAX_TTL ((int64_t)3600)

struct vclient {
  uint8_t pub[FQ_VCP_PUBKEY_LEN];
  uint8_t k[FQ_VCP_KEY_LEN];
  uint8_t cmd_key[32]; /* K' */
  uint32_t counter;    /* highest accepted */
  uint32_t window;     /* bit i: counter - 1 - i was accepted (INFOTAINMENT) */
};

struct fq_vcp_vdomain {
  char vin[FQ_VCP_VIN_MAX + 1];
  int domain;
  const fq_vcp_key_t *key;
  uint8_t epoch[FQ_VCP_EPOCH_LEN];
  int64_t clock_start_ms;
  struct vclient clients[MAX_CLIENTS];
  size_t nclients;
  char aliases[MAX_ALIASES][FQ_VCP_VIN_MAX + 1];
  size_t naliases;
};

static uint32_t vclock(const fq_vcp_vdomain_t *vd, int64_t now_ms) {
  int64_t d = now_ms - vd->clock_start_ms;
  if (d < 0) return 0;
  d /= 1000;
  return d > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static struct vclient *find_client(fq_vcp_vdomain_t *vd, const uint8_t *pub) {
  for (size_t i = 0; i < vd->nclients; i++)
    if (memcmp(vd->clients[i].pub, pub, FQ_VCP_PUBKEY_LEN) == 0) return &vd->clients[i];
  return NULL;
}

int fq_vcp_vdomain_new(const char *vin, int domain, const fq_vcp_key_t *key,
                       const uint8_t *epoch, int64_t clock_start_ms, fq_vcp_vdomain_t **out,
                       fq_err_t *err) {
  *out = NULL;
  size_t vl = vin ? strlen(vin) : 0;
  if (vl == 0 || vl > FQ_VCP_VIN_MAX)
    return fq_errf(err, FQ_EBADPARAM, "VIN must have 1..%d characters", FQ_VCP_VIN_MAX);
  if (domain != FQ_VCP_DOMAIN_VCSEC && domain != FQ_VCP_DOMAIN_INFOTAINMENT)
    return fq_errf(err, FQ_EBADPARAM, "domain %d is neither VCSEC (2) nor INFOTAINMENT (3)", domain);
  fq_vcp_vdomain_t *vd = calloc(1, sizeof *vd);
  if (!vd) return -ENOMEM;
  memcpy(vd->vin, vin, vl + 1);
  vd->domain = domain;
  vd->key = key;
  vd->clock_start_ms = clock_start_ms;
  if (epoch) memcpy(vd->epoch, epoch, FQ_VCP_EPOCH_LEN);
  else if (fq__vcp_random(vd->epoch, FQ_VCP_EPOCH_LEN)) {
    free(vd);
    return fq_errf(err, FQ_ECRYPTO, "no random bytes");
  }
  *out = vd;
  return 0;
}

void fq_vcp_vdomain_destroy(fq_vcp_vdomain_t **vd) {
  if (!vd || !*vd) return;
  OPENSSL_cleanse(*vd, sizeof **vd);
  free(*vd);
  *vd = NULL;
}

int fq_vcp_vdomain_pair(fq_vcp_vdomain_t *vd, const uint8_t pub[FQ_VCP_PUBKEY_LEN],
                        fq_err_t *err) {
  if (find_client(vd, pub)) return 0;
  if (vd->nclients == MAX_CLIENTS)
    return fq_errf(err, FQ_ESTORFULL, "keychain full (%d keys)", MAX_CLIENTS);
  struct vclient *c = &vd->clients[vd->nclients];
  memset(c, 0, sizeof *c);
  int rc = fq_vcp_shared_key(vd->key, pub, c->k, err);
  if (rc) return rc;
  if ((rc = fq_vcp_command_key(c->k, c->cmd_key))) return fq_errf(err, rc, "HMAC failed");
  memcpy(c->pub, pub, FQ_VCP_PUBKEY_LEN);
  vd->nclients++;
  return 0;
}

void fq_vcp_vdomain_unpair(fq_vcp_vdomain_t *vd, const uint8_t pub[FQ_VCP_PUBKEY_LEN]) {
  struct vclient *c = find_client(vd, pub);
  if (!c) return;
  size_t i = (size_t)(c - vd->clients);
  memmove(&vd->clients[i], &vd->clients[i + 1], (vd->nclients - i - 1) * sizeof *c);
  vd->nclients--;
  OPENSSL_cleanse(&vd->clients[vd->nclients], sizeof *c);
}

void fq_vcp_vdomain_new_epoch(fq_vcp_vdomain_t *vd, const uint8_t *epoch, int64_t clock_start_ms) {
  if (epoch) memcpy(vd->epoch, epoch, FQ_VCP_EPOCH_LEN);
  else if (fq__vcp_random(vd->epoch, FQ_VCP_EPOCH_LEN)) vd->epoch[0] ^= 0xff; /* still differs */
  vd->clock_start_ms = clock_start_ms;
  for (size_t i = 0; i < vd->nclients; i++) vd->clients[i].counter = vd->clients[i].window = 0;
}

int fq_vcp_vdomain_set_counter(fq_vcp_vdomain_t *vd, const uint8_t pub[FQ_VCP_PUBKEY_LEN],
                               uint32_t counter) {
  struct vclient *c = find_client(vd, pub);
  if (!c) return FQ_ENOTFOUND;
  c->counter = counter;
  c->window = 0;
  return 0;
}

int fq_vcp_vdomain_add_alias_vin(fq_vcp_vdomain_t *vd, const char *vin) {
  size_t vl = vin ? strlen(vin) : 0;
  if (vl == 0 || vl > FQ_VCP_VIN_MAX) return FQ_EBADPARAM;
  if (vd->naliases == MAX_ALIASES) return FQ_ESTORFULL;
  memcpy(vd->aliases[vd->naliases++], vin, vl + 1);
  return 0;
}

void fq_vcp_vdomain_session_info(const fq_vcp_vdomain_t *vd,
                                 const uint8_t pub[FQ_VCP_PUBKEY_LEN], int64_t now_ms,
                                 fq_vcp_session_info_t *out) {
  const struct vclient *c = find_client((fq_vcp_vdomain_t *)vd, pub);
  memset(out, 0, sizeof *out);
  out->counter = c ? c->counter : 0;
  memcpy(out->public_key, fq_vcp_key_public(vd->key), FQ_VCP_PUBKEY_LEN);
  memcpy(out->epoch, vd->epoch, FQ_VCP_EPOCH_LEN);
  out->clock_time = vclock(vd, now_ms);
  out->status = c ? 0 : 1;
}

/* Anti-replay: may counter c be accepted from client?  VCSEC wants
 * strictly increasing counters; INFOTAINMENT keeps a 32-wide window so
 * commands overtaking each other on the server-to-car link still pass. */
static bool counter_ok(const fq_vcp_vdomain_t *vd, const struct vclient *cl, uint32_t c) {
  if (c == 0) return false;
  if (c > cl->counter) return true;
  if (vd->domain == FQ_VCP_DOMAIN_VCSEC) return false;
  uint32_t back = cl->counter - c;
  if (back == 0 || back > WINDOW) return false;
  return !(cl->window & (1u << (back - 1)));
}

static void counter_accept(struct vclient *cl, uint32_t c) {
  if (c > cl->counter) {
    uint32_t d = c - cl->counter;
    /* The old highest becomes "d below the new highest" (bit d-1). */
    uint64_t w = d >= 64 ? 0 : ((uint64_t)cl->window << d);
    if (cl->counter && d <= WINDOW) w |= (uint64_t)1 << (d - 1);
    cl->window = (uint32_t)w;
    cl->counter = c;
  } else {
    cl->window |= 1u << (cl->counter - c - 1);
  }
}

static bool tag_matches(const uint8_t cmd_key[32], int domain, const char *vin,
                        const fq_vcp_msg_t *m) {
  uint8_t meta[128], tag[FQ_VCP_TAG_LEN];
  size_t ml = fq__vcp_command_meta(domain, vin, m->epoch, m->expires_at, m->counter, m->flags,
                                   meta, sizeof meta);
  if (!ml) return false;
  if (fq__vcp_hmac(cmd_key, 32, meta, ml, m->payload, m->has_payload ? m->payload_len : 0, tag))
    return false;
  return CRYPTO_memcmp(tag, m->tag, FQ_VCP_TAG_LEN) == 0;
}

int fq_vcp_vdomain_verify(fq_vcp_vdomain_t *vd, const uint8_t *p, size_t n, int64_t now_ms,
                          fq_vcp_vrequest_t *vr, fq_err_t *err) {
  fq_vcp_msg_t m;
  memset(vr, 0, offsetof(fq_vcp_vrequest_t, payload));
  vr->payload_len = 0;
  vr->domain = vd->domain;
  int rc = fq_vcp_msg_decode(p, n, &m, err);
  if (rc) {
    vr->fault = FQ_VCP_FAULT_DECODING;
    return FQ_EPROTO;
  }
  vr->has_routing = m.has_from_routing;
  memcpy(vr->routing_address, m.from_routing, FQ_VCP_ROUTING_LEN);
  memcpy(vr->uuid, m.uuid, m.uuid_len);
  vr->uuid_len = m.uuid_len;
  vr->flags = m.flags;
  if (m.has_session_info_request) {
    vr->is_handshake = true;
    if (m.to_domain != vd->domain) vr->fault = FQ_VCP_FAULT_INVALID_DOMAINS;
    else if (m.req_public_key_len != FQ_VCP_PUBKEY_LEN) vr->fault = FQ_VCP_FAULT_DECODING;
    else {
      vr->has_signer = true;
      memcpy(vr->signer, m.req_public_key, FQ_VCP_PUBKEY_LEN);
    }
    goto out;
  }
  if (m.to_domain != vd->domain) {
    vr->fault = FQ_VCP_FAULT_INVALID_DOMAINS;
    goto out;
  }
  if (m.has_signer_public_key) {
    vr->has_signer = true;
    memcpy(vr->signer, m.signer_public_key, FQ_VCP_PUBKEY_LEN);
  }
  struct vclient *cl = m.has_signer_public_key ? find_client(vd, m.signer_public_key) : NULL;
  if (!cl) {
    vr->fault = FQ_VCP_FAULT_UNKNOWN_KEY_ID;
    goto out;
  }
  if (!m.has_hmac) {
    vr->fault = FQ_VCP_FAULT_BAD_PARAMETER;
    goto out;
  }
  vr->counter = m.counter;
  vr->expires_at = m.expires_at;
  memcpy(vr->tag, m.tag, FQ_VCP_TAG_LEN);
  if (memcmp(m.epoch, vd->epoch, FQ_VCP_EPOCH_LEN) != 0) {
    vr->fault = FQ_VCP_FAULT_INCORRECT_EPOCH;
    goto out;
  }
  /* Tesla's verifier checks in this order: epoch, expiry, the bounds of
   * expires_at, then the tag, then the counter; a client learns which
   * fault wins when several apply. */
  int64_t vnow = vclock(vd, now_ms);
  if ((int64_t)m.expires_at < vnow) {
    vr->fault = FQ_VCP_FAULT_TIME_EXPIRED;
    goto out;
  }
  if ((int64_t)m.expires_at > vnow + MAX_AHEAD) {
    vr->fault = FQ_VCP_FAULT_BAD_PARAMETER;
    goto out;
  }
  if ((int64_t)m.expires_at > vnow + MAX_TTL) {
    vr->fault = FQ_VCP_FAULT_TIME_TO_LIVE_TOO_LONG;
    goto out;
  }
  if (!tag_matches(cl->cmd_key, vd->domain, vd->vin, &m)) {
    vr->fault = FQ_VCP_FAULT_INVALID_SIGNATURE;
    for (size_t i = 0; i < vd->naliases; i++)
      if (tag_matches(cl->cmd_key, vd->domain, vd->aliases[i], &m)) {
        vr->fault = FQ_VCP_FAULT_WRONG_PERSONALIZATION;
        break;
      }
    goto out;
  }
  if (!counter_ok(vd, cl, m.counter)) {
    vr->fault = FQ_VCP_FAULT_INVALID_TOKEN_OR_COUNTER;
    goto out;
  }
  counter_accept(cl, m.counter);
  if (m.has_payload && m.payload_len) memcpy(vr->payload, m.payload, m.payload_len);
  vr->payload_len = m.has_payload ? m.payload_len : 0;
  vr->fault = 0;
out:
  fq_vcp_msg_clear(&m);
  return 0;
}

/* Write the envelope fields every reply starts with: to_destination (the
 * client's routing address) and from_destination (our domain). */
static void reply_head(fq__pbw_t *w, const fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr) {
  if (vr->has_routing) {
    fq__pb_submsg(w, 6, 2 + FQ_VCP_ROUTING_LEN);
    fq__pb_bytes(w, 2, vr->routing_address, FQ_VCP_ROUTING_LEN);
  }
  fq__pb_submsg(w, 7, 2);
  fq__pb_uint(w, 1, (uint32_t)vd->domain);
}

static void reply_tail(fq__pbw_t *w, const fq_vcp_vrequest_t *vr) {
  if (vr->uuid_len) fq__pb_bytes(w, 50, vr->uuid, vr->uuid_len);
}

/* Session info for the requester plus its tag; tag_ok false when no K
 * can be had (the requester's key is not a point). */
static int session_info_for(fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr, int64_t now_ms,
                            fq_buf_t *info, uint8_t tag[FQ_VCP_TAG_LEN], bool *tag_ok) {
  fq_vcp_session_info_t si;
  uint8_t k[FQ_VCP_KEY_LEN];
  *tag_ok = false;
  fq_vcp_vdomain_session_info(vd, vr->signer, now_ms, &si);
  int rc = fq_vcp_session_info_encode(&si, info);
  if (rc) return rc;
  const struct vclient *cl = vr->has_signer ? find_client(vd, vr->signer) : NULL;
  if (cl) memcpy(k, cl->k, sizeof k);
  else if (!vr->has_signer || fq_vcp_shared_key(vd->key, vr->signer, k, NULL))
    return 0;
  rc = fq_vcp_session_info_tag(k, vd->vin, vr->uuid, vr->uuid_len, info->data, info->len, tag);
  OPENSSL_cleanse(k, sizeof k);
  if (rc) return rc;
  *tag_ok = true;
  return 0;
}

static int emit(fq_buf_t *out, const uint8_t *b, const fq__pbw_t *w, fq_err_t *err) {
  (void)b;
  if (w->bad) return fq_errf(err, FQ_EINTERNAL, "reply buffer too small");
  out->len += w->len;
  return 0;
}

int fq_vcp_vdomain_handshake_reply(fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr,
                                   int64_t now_ms, fq_buf_t *out, fq_err_t *err) {
  fq_buf_t info;
  uint8_t tag[FQ_VCP_TAG_LEN];
  bool tag_ok;
  fq_buf_init(&info, 1024);
  int rc = session_info_for(vd, vr, now_ms, &info, tag, &tag_ok);
  if (rc) goto out;
  if ((rc = fq_buf_reserve(out, info.len + 256))) goto out;
  fq__pbw_t w = {out->data + out->len, 0, out->alloc - out->len, false};
  reply_head(&w, vd, vr);
  if (tag_ok) {
    fq__pb_submsg(&w, 13, 2 + 2 + FQ_VCP_TAG_LEN);
    fq__pb_submsg(&w, 6, 2 + FQ_VCP_TAG_LEN);
    fq__pb_bytes(&w, 1, tag, FQ_VCP_TAG_LEN);
  }
  fq__pb_bytes(&w, 15, info.data, info.len);
  reply_tail(&w, vr);
  rc = emit(out, NULL, &w, err);
out:
  fq_buf_free(&info);
  return rc;
}

int fq_vcp_vdomain_fault_reply(fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr, int fault,
                               int64_t now_ms, fq_buf_t *out, fq_err_t *err) {
  fq_buf_t info;
  uint8_t tag[FQ_VCP_TAG_LEN];
  bool tag_ok = false;
  int rc = 0;
  fq_buf_init(&info, 1024);
  /* Fresh session info lets a client with a paired key resync and retry;
   * an unknown or disabled key learns nothing. */
  bool with_info = fault != FQ_VCP_FAULT_UNKNOWN_KEY_ID && fault != FQ_VCP_FAULT_INACTIVE_KEY &&
                   vr->has_signer && find_client(vd, vr->signer);
  if (with_info && (rc = session_info_for(vd, vr, now_ms, &info, tag, &tag_ok))) goto out;
  if ((rc = fq_buf_reserve(out, info.len + 256))) goto out;
  fq__pbw_t w = {out->data + out->len, 0, out->alloc - out->len, false};
  reply_head(&w, vd, vr);
  fq__pb_submsg(&w, 12, 2 + 1 + fq__varint_len((uint32_t)fault));
  fq__pb_uint(&w, 1, FQ_VCP_OP_ERROR);
  fq__pb_uint(&w, 2, (uint32_t)fault);
  if (with_info && tag_ok) {
    fq__pb_submsg(&w, 13, 2 + 2 + FQ_VCP_TAG_LEN);
    fq__pb_submsg(&w, 6, 2 + FQ_VCP_TAG_LEN);
    fq__pb_bytes(&w, 1, tag, FQ_VCP_TAG_LEN);
    fq__pb_bytes(&w, 15, info.data, info.len);
  }
  reply_tail(&w, vr);
  rc = emit(out, NULL, &w, err);
out:
  fq_buf_free(&info);
  return rc;
}

int fq_vcp_vdomain_reply(fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr,
                         const uint8_t *app, size_t app_len, const uint8_t *nonce,
                         uint32_t counter, fq_buf_t *out, fq_err_t *err) {
  int rc;
  uint8_t *ct = NULL;
  if (app_len > FQ_VCP_MAX_PAYLOAD)
    return fq_errf(err, FQ_ETOOLARGE, "reply of %zu bytes exceeds %d", app_len, FQ_VCP_MAX_PAYLOAD);
  if ((rc = fq_buf_reserve(out, app_len + 256))) return rc;
  fq__pbw_t w = {out->data + out->len, 0, out->alloc - out->len, false};
  bool encrypt = (vr->flags & FQ_VCP_FLAG_ENCRYPT_RESPONSE) != 0;
  if (!encrypt) {
    reply_head(&w, vd, vr);
    if (app_len) fq__pb_bytes(&w, 10, app, app_len);
    reply_tail(&w, vr);
    return emit(out, NULL, &w, err);
  }
  const struct vclient *cl = vr->has_signer ? find_client(vd, vr->signer) : NULL;
  if (!cl) return fq_errf(err, FQ_ENOTFOUND, "signer is not paired: cannot encrypt the reply");
  uint8_t n12[FQ_VCP_NONCE_LEN], h[33], rmeta[160], aad[32], gtag[FQ_VCP_GCM_TAG_LEN];
  unsigned aadl = 0;
  if (nonce) memcpy(n12, nonce, sizeof n12);
  else if (fq__vcp_random(n12, sizeof n12)) return fq_errf(err, FQ_ECRYPTO, "no random bytes");
  if (!counter) counter = vr->counter + 1;
  if (!counter) counter = 1; /* proto3 would drop a 0 */
  size_t hl = fq_vcp_request_hash(vd->domain, vr->tag, h);
  size_t rl = fq_vcp_response_metadata(vd->domain, vd->vin, counter, 0, h, hl, 0, rmeta,
                                       sizeof rmeta);
  if (!rl || !fq__vcp_sha256() || !EVP_Digest(rmeta, rl, aad, &aadl, fq__vcp_sha256(), NULL))
    return fq_errf(err, FQ_ECRYPTO, "cannot hash the response metadata");
  ct = malloc(app_len ? app_len : 1);
  if (!ct) return -ENOMEM;
  if ((rc = fq_vcp_gcm_encrypt(cl->k, n12, aad, sizeof aad, app, app_len, ct, gtag))) {
    rc = fq_errf(err, rc, "AES-GCM encryption failed");
    goto out;
  }
  size_t gl = 2 + FQ_VCP_NONCE_LEN + 1 + fq__varint_len(counter) + 2 + FQ_VCP_GCM_TAG_LEN;
  reply_head(&w, vd, vr);
  fq__pb_bytes(&w, 10, ct, app_len);
  fq__pb_submsg(&w, 13, 1 + fq__varint_len(gl) + gl);
  fq__pb_submsg(&w, 9, gl);
  fq__pb_bytes(&w, 1, n12, FQ_VCP_NONCE_LEN);
  fq__pb_uint(&w, 2, counter);
  fq__pb_bytes(&w, 3, gtag, FQ_VCP_GCM_TAG_LEN);
  reply_tail(&w, vr);
  rc = emit(out, NULL, &w, err);
out:
  free(ct);
  return rc;
}

int fq_vcp_vdomain_handle(fq_vcp_vdomain_t *vd, const uint8_t *p, size_t n, int64_t now_ms,
                          fq_vcp_vrequest_t *vr, fq_buf_t *out, fq_err_t *err) {
  int rc = fq_vcp_vdomain_verify(vd, p, n, now_ms, vr, err);
  if (rc) return rc;
  if (vr->is_handshake && vr->fault == 0) return fq_vcp_vdomain_handshake_reply(vd, vr, now_ms, out, err);
  if (vr->fault) return fq_vcp_vdomain_fault_reply(vd, vr, vr->fault, now_ms, out, err);
  return 0;
}
