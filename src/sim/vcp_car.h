/*
 * vcp_car: the car's side of the Tesla Vehicle Command Protocol (see
 * ../shared/spec/vehicle-command-protocol.md), for the simulator.  One
 * fq_vcp_vdomain_t per (car, domain) answers handshakes, verifies signed
 * commands exactly as a car does (signer key, VIN, epoch, counter window,
 * expiry, tag), and builds fault replies and encrypted replies; the
 * application replies (CarServer.Response, VCSEC.FromVCSECMessage) are
 * built here too.
 *
 * Implemented in vcp_vehicle.c and vcp_app_car.c on top of the fleet
 * side's public primitives (src/vcp/vcp.h) and the small cross-part
 * interface src/vcp/vcp_car_api.h, so a test that signs with one side and
 * verifies with the other checks both against the spec's vectors.
 * fleetqd does not link this part.
 *
 * Threads: a vdomain is owned by one thread at a time (the simulator holds
 * its world lock); nothing is internally locked.
 */
#ifndef FQ_VCP_CAR_H
#define FQ_VCP_CAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"
#include "vcp.h"

/* ---------------------------------------------------------------------- */
/* Protocol: one domain of one car                                         */

/* One domain of one simulated car: VIN, the domain's key pair, an epoch, a
 * clock (seconds since the epoch started) and, per paired client key, the
 * highest counter and a 32-entry sliding window. */
typedef struct fq_vcp_vdomain fq_vcp_vdomain_t;

/* Create a domain.  key is borrowed (must outlive vd).  epoch: 16 bytes or
 * NULL for random.  clock_start_ms: local time at which the vehicle clock
 * read 0 (vehicle clock = (now_ms - clock_start_ms) / 1000).  0, -ENOMEM,
 * FQ_ECRYPTO, FQ_EBADPARAM (bad domain or VIN). */
int fq_vcp_vdomain_new(const char *vin, int domain, const fq_vcp_key_t *key,
                       const uint8_t *epoch, int64_t clock_start_ms, fq_vcp_vdomain_t **out,
                       fq_err_t *err);
void fq_vcp_vdomain_destroy(fq_vcp_vdomain_t **vd);

/* Pair / unpair a client public key (65 bytes).  pair derives K once.
 * 0, FQ_ECRYPTO (not a P-256 point), FQ_ESTORFULL (keychain full: 64). */
int fq_vcp_vdomain_pair(fq_vcp_vdomain_t *vd, const uint8_t pub[FQ_VCP_PUBKEY_LEN],
                        fq_err_t *err);
void fq_vcp_vdomain_unpair(fq_vcp_vdomain_t *vd, const uint8_t pub[FQ_VCP_PUBKEY_LEN]);

/* Start a new epoch (a reboot): new epoch (16 bytes or NULL = random),
 * counters and windows of every paired key reset to 0, clock restarted. */
void fq_vcp_vdomain_new_epoch(fq_vcp_vdomain_t *vd, const uint8_t *epoch, int64_t clock_start_ms);

/* Set the counter the car holds for a paired key (tests: the vectors'
 * session starts at counter 6).  FQ_ENOTFOUND when not paired. */
int fq_vcp_vdomain_set_counter(fq_vcp_vdomain_t *vd, const uint8_t pub[FQ_VCP_PUBKEY_LEN],
                               uint32_t counter);

/* Register another VIN (at most 16) whose commands this car recognises as
 * meant for a different car (WRONG_PERSONALIZATION instead of
 * INVALID_SIGNATURE).  0 or FQ_ESTORFULL / FQ_EBADPARAM. */
int fq_vcp_vdomain_add_alias_vin(fq_vcp_vdomain_t *vd, const char *vin);

/* Build the SessionInfo the car would report to pub now (status
 * KEY_NOT_ON_WHITELIST and counter 0 when pub is not paired). */
void fq_vcp_vdomain_session_info(const fq_vcp_vdomain_t *vd,
                                 const uint8_t pub[FQ_VCP_PUBKEY_LEN], int64_t now_ms,
                                 fq_vcp_session_info_t *out);

/* What the car learnt from one request. */
typedef struct fq_vcp_vrequest {
  bool is_handshake;
  int fault;                          /* MessageFault_E; 0 = accepted */
  int domain;
  bool has_routing;
  uint8_t routing_address[FQ_VCP_ROUTING_LEN]; /* request's from_destination */
  uint8_t uuid[FQ_VCP_UUID_LEN];      /* request uuid (the challenge) */
  size_t uuid_len;
  bool has_signer;
  uint8_t signer[FQ_VCP_PUBKEY_LEN];
  uint32_t counter, expires_at, flags;
  uint8_t tag[FQ_VCP_TAG_LEN];
  uint8_t payload[FQ_VCP_MAX_PAYLOAD]; /* the command bytes when accepted */
  size_t payload_len;
} fq_vcp_vrequest_t;

/* Verify one request exactly as the car does, in this order: decodable
 * (DECODING), to_destination domain matches (INVALID_DOMAINS), signer key
 * present and paired (UNKNOWN_KEY_ID), HMAC_Personalized data present
 * (BAD_PARAMETER otherwise, e.g. AES-GCM), epoch (INCORRECT_EPOCH), the
 * HMAC tag over the metadata built with this car's VIN and domain and the
 * message's expires_at / counter / flags (INVALID_SIGNATURE; but a tag
 * that verifies under one of the VINs registered with
 * fq_vcp_vdomain_add_alias_vin() is WRONG_PERSONALIZATION: an HMAC alone
 * cannot name the VIN it was made for), expires_at more than 2^30 s ahead
 * of the vehicle clock (BAD_PARAMETER), expired (TIME_EXPIRED), counter
 * (VCSEC: strictly greater than the last accepted; INFOTAINMENT: greater,
 * or one of the 32 below the highest not yet seen; never 0; else
 * INVALID_TOKEN_OR_COUNTER).  Checking the tag before expiry and counter
 * means an unauthenticated sender learns nothing about the car's state.
 * Only an accepted request advances the counter state.  Handshake
 * requests set vr->is_handshake and are not verified here.  Returns 0
 * (vr->fault says the verdict) or FQ_EPROTO when the bytes are not a
 * RoutableMessage at all (vr->fault = DECODING). */
int fq_vcp_vdomain_verify(fq_vcp_vdomain_t *vd, const uint8_t *p, size_t n, int64_t now_ms,
                          fq_vcp_vrequest_t *vr, fq_err_t *err);

/* Handshake reply to vr (a session_info_request): session_info for the
 * requesting key + session_info_tag (challenge = vr->uuid), to_destination
 * = vr's routing address, from_destination = domain, request_uuid.
 * Appends to out. */
int fq_vcp_vdomain_handshake_reply(fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr,
                                   int64_t now_ms, fq_buf_t *out, fq_err_t *err);

/* Fault reply: signedMessageStatus {ERROR, fault}; for faults a client can
 * recover from by resyncing (and whenever the signer is paired) it also
 * carries fresh session_info + session_info_tag.  UNKNOWN_KEY_ID replies
 * carry no session info (as in the vectors).  Appends to out. */
int fq_vcp_vdomain_fault_reply(fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr, int fault,
                               int64_t now_ms, fq_buf_t *out, fq_err_t *err);

/* Reply to an accepted command with application bytes (CarServer.Response
 * / VCSEC.FromVCSECMessage).  When the request set ENCRYPT_RESPONSE the
 * reply is AES-GCM encrypted (nonce: 12 bytes or NULL for random; counter:
 * the reply counter, 0 = request counter + 1); otherwise sent in clear.
 * Appends the RoutableMessage to out. */
int fq_vcp_vdomain_reply(fq_vcp_vdomain_t *vd, const fq_vcp_vrequest_t *vr,
                         const uint8_t *app, size_t app_len, const uint8_t *nonce,
                         uint32_t counter, fq_buf_t *out, fq_err_t *err);

/* Everything at once: verify p; append to out the handshake reply, or the
 * fault reply, or nothing when the command was accepted (vr->fault == 0 and
 * !vr->is_handshake: execute vr->payload, then call fq_vcp_vdomain_reply).
 * Returns 0 or FQ_EPROTO (undecodable: out holds nothing, answer HTTP 400). */
int fq_vcp_vdomain_handle(fq_vcp_vdomain_t *vd, const uint8_t *p, size_t n, int64_t now_ms,
                          fq_vcp_vrequest_t *vr, fq_buf_t *out, fq_err_t *err);

/* ---------------------------------------------------------------------- */
/* Application replies the car sends                                       */

/* The car decodes a command payload with fq_vcp_app_decode_command
 * (vcp.h), executes it, and answers with one of these, appended to out
 * (0 or a buffer error; thread safe).
 * CarServer.Response: ok, or ERROR with reason as result_reason.plain_text
 * (reason may be NULL; copied). */
int fq_vcp_app_carserver_reply(bool ok, const char *reason, fq_buf_t *out);
/* VCSEC.FromVCSECMessage: op_status >= 0 sets commandStatus.operationStatus;
 * nominal_error > 0 sets nominalError.genericError; both unset (-1, 0) ->
 * the empty message (success). */
int fq_vcp_app_vcsec_reply(int op_status, int nominal_error, fq_buf_t *out);

#endif
