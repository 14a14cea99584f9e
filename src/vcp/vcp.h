/*
 * vcp: the Tesla Vehicle Command Protocol (see
 * ../shared/spec/vehicle-command-protocol.md), fleet side.
 *
 * The dispatcher and the CLI use it: the fleet's P-256 key, the handshake
 * that yields a session per (VIN, domain), HMAC-personalized signing of
 * commands, verification of session info, decryption of AES-GCM replies,
 * and the classification of every reply into what the dispatcher must do
 * next (ok / retry / resync-and-retry-once / fail / unknown outcome) with
 * a human `reason`.  The protocol's primitives (metadata, tags, AES-GCM,
 * SessionInfo and RoutableMessage codecs) are public too: tests, the
 * simulator and benchmarks build on them.
 *
 * The car's side (answering handshakes, verifying commands as a car does,
 * the car's replies) is part of the simulator: src/sim/vcp_car.h.  It
 * uses this part through vcp.h and vcp_car_api.h only.
 *
 * Threads: every object here is owned by one thread at a time (a shard
 * owns its sessions); nothing is internally locked.  Free functions that
 * take no object are thread safe.  Only OpenSSL 3 EVP APIs are used.
 *
 * Times: `now_ms` / `deadline_ms` are the caller's clock in Unix
 * milliseconds; vehicle clocks are in seconds (SessionInfo.clock_time).
 */
#ifndef FQ_VCP_H
#define FQ_VCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"

#define FQ_VCP_PUBKEY_LEN 65  /* 0x04 || X || Y */
#define FQ_VCP_KEY_LEN 16     /* K: AES-128 / HMAC key from ECDH */
#define FQ_VCP_EPOCH_LEN 16
#define FQ_VCP_TAG_LEN 32     /* HMAC-SHA256 tag */
#define FQ_VCP_UUID_LEN 16
#define FQ_VCP_ROUTING_LEN 16
#define FQ_VCP_NONCE_LEN 12   /* AES-GCM nonce */
#define FQ_VCP_GCM_TAG_LEN 16
#define FQ_VCP_VIN_MAX 32     /* longest personalization (VIN) accepted */
#define FQ_VCP_MAX_MSG 16384  /* cap on a RoutableMessage we parse */
#define FQ_VCP_MAX_PAYLOAD 4096 /* cap on a command / reply payload */
#define FQ_VCP_DEFAULT_LIFETIME_S 5
/* Session info answering a request sent longer ago than this is discarded
 * (Tesla's client: MaxLatency). */
#define FQ_VCP_MAX_LATENCY_MS 10000
#define FQ_VCP_FLAG_ENCRYPT_RESPONSE 2u /* 1 << Flags.ENCRYPT_RESPONSE */
/* Bytes of a serialized session (fq_vcp_session_save). */
#define FQ_VCP_SESSION_BLOB_MAX 192

/* UniversalMessage.Domain */
enum { FQ_VCP_DOMAIN_BROADCAST = 0, FQ_VCP_DOMAIN_VCSEC = 2, FQ_VCP_DOMAIN_INFOTAINMENT = 3 };

/* UniversalMessage.OperationStatus_E (also VCSEC.OperationStatus_E) */
enum { FQ_VCP_OP_OK = 0, FQ_VCP_OP_WAIT = 1, FQ_VCP_OP_ERROR = 2 };

/* UniversalMessage.MessageFault_E, values 0..28. */
#define FQ_VCP_FAULTS(X)                        \
  X(NONE, 0)                                    \
  X(BUSY, 1)                                    \
  X(TIMEOUT, 2)                                 \
  X(UNKNOWN_KEY_ID, 3)                          \
  X(INACTIVE_KEY, 4)                            \
  X(INVALID_SIGNATURE, 5)                       \
  X(INVALID_TOKEN_OR_COUNTER, 6)                \
  X(INSUFFICIENT_PRIVILEGES, 7)                 \
  X(INVALID_DOMAINS, 8)                         \
  X(INVALID_COMMAND, 9)                         \
  X(DECODING, 10)                               \
  X(INTERNAL, 11)                               \
  X(WRONG_PERSONALIZATION, 12)                  \
  X(BAD_PARAMETER, 13)                          \
  X(KEYCHAIN_IS_FULL, 14)                       \
  X(INCORRECT_EPOCH, 15)                        \
  X(IV_INCORRECT_LENGTH, 16)                    \
  X(TIME_EXPIRED, 17)                           \
  X(NOT_PROVISIONED_WITH_IDENTITY, 18)          \
  X(COULD_NOT_HASH_METADATA, 19)                \
  X(TIME_TO_LIVE_TOO_LONG, 20)                  \
  X(REMOTE_ACCESS_DISABLED, 21)                 \
  X(REMOTE_SERVICE_ACCESS_DISABLED, 22)         \
  X(COMMAND_REQUIRES_ACCOUNT_CREDENTIALS, 23)   \
  X(REQUEST_MTU_EXCEEDED, 24)                   \
  X(RESPONSE_MTU_EXCEEDED, 25)                  \
  X(REPEATED_COUNTER, 26)                       \
  X(INVALID_KEY_HANDLE, 27)                     \
  X(REQUIRES_RESPONSE_ENCRYPTION, 28)

enum fq_vcp_fault {
#define FQ__VCP_FAULT_ENUM(name, v) FQ_VCP_FAULT_##name = v,
  FQ_VCP_FAULTS(FQ__VCP_FAULT_ENUM)
#undef FQ__VCP_FAULT_ENUM
  FQ_VCP_FAULT_COUNT_
};

/* "UNKNOWN_KEY_ID" etc.; "UNRECOGNIZED" for values outside 0..28. Static. */
const char *fq_vcp_fault_name(int fault);

/* ---------------------------------------------------------------------- */
/* Outcome classification                                                  */

/* What the dispatcher does with a reply. */
typedef enum fq_vcp_action {
  FQ_VCP_OK = 0,        /* the car executed the command */
  FQ_VCP_RETRY,         /* transient: re-sign (new counter) and send again after a backoff */
  FQ_VCP_RESYNC_RETRY,  /* re-sign and retry once: the session was resynced from the
                         * reply, or is stale (fq_vcp_session_stale): handshake first */
  FQ_VCP_FAIL,          /* definitive failure: do not retry */
  FQ_VCP_UNKNOWN,       /* the car may have executed it: never resend blindly */
} fq_vcp_action_t;

/* "ok", "retry", "resync_retry", "fail", "unknown". Static. */
const char *fq_vcp_action_name(fq_vcp_action_t a);

#define FQ_VCP_REASON_MAX 200
typedef struct fq_vcp_outcome {
  fq_vcp_action_t action;
  int fault;    /* MessageFault_E from the reply, or -1 when none was given */
  int error;    /* 0, or the project code for a failure: FQ_ENOTPAIRED for
                 * fault 3 / KEY_NOT_ON_WHITELIST, FQ_EFAULT for other faults
                 * and application errors, FQ_EBUSY for WAIT, FQ_EVERIFY,
                 * FQ_EREPLAY, FQ_EPROTO for replies we refuse */
  char reason[FQ_VCP_REASON_MAX]; /* human text, printable ASCII, "" when ok */
  /* A CarServer actionStatus ERROR: the car refused the command in its own
   * words, car_reason (plain_text, printable ASCII, "" when it gave none).
   * The caller decides with fq_cmd_refusal() whether that refusal means
   * "already as asked", as the REST path does. */
  bool car_refused;
  char car_reason[64];
} fq_vcp_outcome_t;

/* Classify one MessageFault_E value (any int; unknown values fail).  Fault
 * 3 gives exactly "vehicle rejected request: your public key has not been
 * paired with the vehicle" (the dispatcher appends the pairing link).
 * Never fails; thread safe. */
void fq_vcp_classify_fault(int fault, fq_vcp_outcome_t *out);

/* Classify an application reply: for INFOTAINMENT a CarServer.Response
 * (actionStatus ERROR -> fail, reason = result_reason.plain_text or
 * "unspecified error", car_refused set and car_reason = the plain text), for VCSEC a VCSEC.FromVCSECMessage (empty -> ok,
 * commandStatus WAIT -> retry, ERROR -> fail, nominalError -> fail with its
 * name, e.g. "vcsec could not execute command: CLOSURES_OPEN").  An empty
 * buffer is ok for both domains.  Returns 0, or FQ_EPROTO when the bytes do
 * not decode (out then says fail with that reason).  Thread safe. */
int fq_vcp_classify_app_reply(int domain, const uint8_t *p, size_t n, fq_vcp_outcome_t *out);

/* ---------------------------------------------------------------------- */
/* Keys                                                                    */

/* A P-256 key pair (the fleet key, or a car's domain key in the simulator).
 * Immutable after creation: may be shared read-only between threads. */
typedef struct fq_vcp_key fq_vcp_key_t;

/* Load a private key file (PEM, SEC1 "EC PRIVATE KEY" or PKCS#8).  Refuses
 * a symlink, a non-regular file or one readable/writable by group or
 * others (fq_check_secret_file), a file over 16 KiB, a non-EC key or
 * another curve than P-256.  Returns 0, FQ_EKEYFILE (err says why) or
 * -ENOMEM.  *out is owned by the caller (fq_vcp_key_destroy). */
int fq_vcp_key_load(const char *path, fq_vcp_key_t **out, fq_err_t *err);

/* Same from PEM text in memory (no file checks): tests and the simulator. */
int fq_vcp_key_from_pem(const char *pem, size_t len, fq_vcp_key_t **out, fq_err_t *err);

/* Generate a fresh P-256 key. 0 or FQ_ECRYPTO. */
int fq_vcp_key_generate(fq_vcp_key_t **out, fq_err_t *err);

void fq_vcp_key_destroy(fq_vcp_key_t **k);

/* The 65-byte uncompressed public point; valid while k lives. */
const uint8_t *fq_vcp_key_public(const fq_vcp_key_t *k);

/* PEM text of the private key (PKCS#8 "PRIVATE KEY") or of the public key
 * ("PUBLIC KEY", SubjectPublicKeyInfo) appended to out (NUL not included).
 * 0, FQ_ECRYPTO or a buffer error.  The private PEM is a secret: wipe and
 * free it when done. */
int fq_vcp_key_private_pem(const fq_vcp_key_t *k, fq_buf_t *out, fq_err_t *err);
int fq_vcp_key_public_pem(const fq_vcp_key_t *k, fq_buf_t *out, fq_err_t *err);

/* K = SHA1(ECDH(k, peer).x)[0:16].  peer is a 65-byte uncompressed point
 * on P-256; FQ_ECRYPTO when it is not. */
int fq_vcp_shared_key(const fq_vcp_key_t *k, const uint8_t peer[FQ_VCP_PUBKEY_LEN],
                      uint8_t out[FQ_VCP_KEY_LEN], fq_err_t *err);

/* ---------------------------------------------------------------------- */
/* Low-level pieces (exposed for tests, the simulator and benchmarks)      */

/* Signatures.Tag values for metadata. */
enum {
  FQ_VCP_TAG_SIGNATURE_TYPE = 0, FQ_VCP_TAG_DOMAIN = 1, FQ_VCP_TAG_PERSONALIZATION = 2,
  FQ_VCP_TAG_EPOCH = 3, FQ_VCP_TAG_EXPIRES_AT = 4, FQ_VCP_TAG_COUNTER = 5,
  FQ_VCP_TAG_CHALLENGE = 6, FQ_VCP_TAG_FLAGS = 7, FQ_VCP_TAG_REQUEST_HASH = 8,
  FQ_VCP_TAG_FAULT = 9, FQ_VCP_TAG_END = 255,
};
/* Signatures.SignatureType */
enum {
  FQ_VCP_SIG_AES_GCM = 0, FQ_VCP_SIG_AES_GCM_PERSONALIZED = 5, FQ_VCP_SIG_HMAC = 6,
  FQ_VCP_SIG_HMAC_PERSONALIZED = 8, FQ_VCP_SIG_AES_GCM_RESPONSE = 9,
};

/* Metadata TLV writer over a caller's fixed array.  Items must be added in
 * increasing tag order; a value over 255 bytes, a tag out of order or a
 * full array sets `bad`, reported by fq_vcp_meta_end(). */
typedef struct fq_vcp_meta {
  uint8_t *p;
  size_t len, cap;
  int last_tag;
  bool bad;
} fq_vcp_meta_t;

void fq_vcp_meta_init(fq_vcp_meta_t *m, uint8_t *buf, size_t cap);
void fq_vcp_meta_add(fq_vcp_meta_t *m, int tag, const void *v, size_t n);
void fq_vcp_meta_add_u32(fq_vcp_meta_t *m, int tag, uint32_t v); /* 4 bytes big endian */
/* Append 0xFF; returns the total length, or 0 when bad / out of room. */
size_t fq_vcp_meta_end(fq_vcp_meta_t *m);

/* HMAC-SHA256(K, "session info") and HMAC-SHA256(K, "authenticated command"). */
int fq_vcp_session_info_key(const uint8_t k[FQ_VCP_KEY_LEN], uint8_t out[32]);
int fq_vcp_command_key(const uint8_t k[FQ_VCP_KEY_LEN], uint8_t out[32]);

/* Tag of a SessionInfo: HMAC(SESSION_INFO_KEY, TLV(SIGNATURE_TYPE,[6]) ||
 * TLV(PERSONALIZATION, vin) || TLV(CHALLENGE, challenge) || 0xFF || info). */
int fq_vcp_session_info_tag(const uint8_t k[FQ_VCP_KEY_LEN], const char *vin,
                            const uint8_t *challenge, size_t challenge_len,
                            const uint8_t *info, size_t info_len, uint8_t out[FQ_VCP_TAG_LEN]);

/* Request hash of a signed command: [8] || tag (VCSEC: first 16 bytes of
 * the tag).  Returns its length (33 or 17). */
size_t fq_vcp_request_hash(int domain, const uint8_t tag[FQ_VCP_TAG_LEN], uint8_t out[33]);

/* AES-128-GCM with AAD; 0 or FQ_ECRYPTO / FQ_EVERIFY (bad tag).  out has
 * room for n bytes. */
int fq_vcp_gcm_encrypt(const uint8_t k[FQ_VCP_KEY_LEN], const uint8_t nonce[FQ_VCP_NONCE_LEN],
                       const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n,
                       uint8_t *out, uint8_t tag[FQ_VCP_GCM_TAG_LEN]);
int fq_vcp_gcm_decrypt(const uint8_t k[FQ_VCP_KEY_LEN], const uint8_t nonce[FQ_VCP_NONCE_LEN],
                       const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n,
                       const uint8_t tag[FQ_VCP_GCM_TAG_LEN], uint8_t *out);

/* Response metadata R (see the spec); returns its length or 0. */
size_t fq_vcp_response_metadata(int from_domain, const char *vin, uint32_t counter,
                                uint32_t flags, const uint8_t *req_hash, size_t req_hash_len,
                                uint32_t fault, uint8_t *out, size_t cap);

/* ---------------------------------------------------------------------- */
/* A decoded RoutableMessage (for replies, the simulator and the CLI)      */

typedef struct fq_vcp_msg {
  int to_domain, from_domain;          /* -1 when not a domain */
  bool has_to_routing, has_from_routing;
  uint8_t to_routing[FQ_VCP_ROUTING_LEN], from_routing[FQ_VCP_ROUTING_LEN];
  /* payload oneof; at most one of these is set */
  bool has_payload, has_session_info, has_session_info_request;
  uint8_t *payload;       size_t payload_len;      /* protobuf_message_as_bytes */
  uint8_t *session_info;  size_t session_info_len; /* SessionInfo bytes */
  uint8_t req_public_key[FQ_VCP_PUBKEY_LEN];  size_t req_public_key_len;
  uint8_t req_challenge[32];                  size_t req_challenge_len;
  /* signedMessageStatus */
  bool has_status;
  int op_status, fault;
  /* signature_data */
  bool has_signer_public_key;
  uint8_t signer_public_key[FQ_VCP_PUBKEY_LEN];
  bool has_session_info_tag;
  uint8_t session_info_tag[FQ_VCP_TAG_LEN];
  bool has_hmac;                       /* HMAC_Personalized_data */
  uint8_t epoch[FQ_VCP_EPOCH_LEN];
  uint32_t counter, expires_at;
  uint8_t tag[FQ_VCP_TAG_LEN];
  bool has_gcm_response;               /* AES_GCM_Response_data */
  uint8_t gcm_nonce[FQ_VCP_NONCE_LEN];
  uint32_t gcm_counter;
  uint8_t gcm_tag[FQ_VCP_GCM_TAG_LEN];
  uint8_t request_uuid[FQ_VCP_UUID_LEN]; size_t request_uuid_len;
  uint8_t uuid[FQ_VCP_UUID_LEN];         size_t uuid_len;
  uint32_t flags;
  void *pb_;                           /* owns payload / session_info */
} fq_vcp_msg_t;

/* Decode a RoutableMessage (at most FQ_VCP_MAX_MSG bytes).  Fixed-size
 * fields of the wrong length (epoch, tags, nonce, public keys, uuids over
 * 16 bytes) are FQ_EPROTO.  On success m owns memory: call
 * fq_vcp_msg_clear().  On error m needs no clearing. */
int fq_vcp_msg_decode(const uint8_t *p, size_t n, fq_vcp_msg_t *m, fq_err_t *err);
void fq_vcp_msg_clear(fq_vcp_msg_t *m);

/* The to_destination domain of a RoutableMessage, so the simulator can
 * route it to the right fq_vcp_vdomain_t; -1 when absent or undecodable. */
int fq_vcp_peek_domain(const uint8_t *p, size_t n);

/* Decoded SessionInfo. */
typedef struct fq_vcp_session_info {
  uint32_t counter;
  uint8_t public_key[FQ_VCP_PUBKEY_LEN];
  uint8_t epoch[FQ_VCP_EPOCH_LEN];
  uint32_t clock_time;
  int status;   /* 0 OK, 1 KEY_NOT_ON_WHITELIST */
  uint32_t handle;
} fq_vcp_session_info_t;

/* Decode / encode SessionInfo bytes.  decode: FQ_EPROTO on bad bytes or a
 * public key / epoch of the wrong length. encode appends to out. */
int fq_vcp_session_info_decode(const uint8_t *p, size_t n, fq_vcp_session_info_t *out,
                               fq_err_t *err);
int fq_vcp_session_info_encode(const fq_vcp_session_info_t *si, fq_buf_t *out);

/* ---------------------------------------------------------------------- */
/* Client side: handshake, session, signing, replies                       */

/* What the client remembers about one request it sent (a handshake or a
 * signed command), to match and authenticate the reply.  Plain data, may
 * be copied; persist it with the in-flight command if replies can outlive
 * a restart. */
#define FQ_VCP_SEEN_MAX 8
typedef struct fq_vcp_request {
  int domain;
  uint8_t uuid[FQ_VCP_UUID_LEN];
  uint8_t routing_address[FQ_VCP_ROUTING_LEN];
  bool is_handshake;
  uint32_t counter, expires_at, flags;
  uint8_t tag[FQ_VCP_TAG_LEN];          /* HMAC tag of the command */
  int64_t sent_ms;
  uint32_t seen[FQ_VCP_SEEN_MAX];       /* reply counters already accepted */
  size_t nseen;
} fq_vcp_request_t;

/* Build a handshake RoutableMessage for domain: session_info_request with
 * the key's public point, from_destination.routing_address = routing (16
 * random bytes when NULL), uuid (16 random bytes when NULL).  Appends to
 * out and fills *req.  0, FQ_ECRYPTO (random) or a buffer error. */
int fq_vcp_handshake_request(const fq_vcp_key_t *key, int domain, const uint8_t *routing,
                             const uint8_t *uuid, int64_t now_ms, fq_vcp_request_t *req,
                             fq_buf_t *out, fq_err_t *err);

/* A session with one domain of one car.  Holds K (and the precomputed
 * HMAC state for K'), epoch, counter, clock offset, the car's public key
 * and the routing address.  Owned by one thread. */
typedef struct fq_vcp_session fq_vcp_session_t;

/* Finish a handshake: decode the reply to req, check its request_uuid,
 * derive K from the car's public key, verify session_info_tag (challenge =
 * req->uuid, constant time) and create a session (clock_offset = now -
 * clock_time).  Returns 0 with *out set and o->action OK; otherwise *out
 * stays NULL and o classifies the failure: KEY_NOT_ON_WHITELIST or fault 3
 * -> FAIL/FQ_ENOTPAIRED, other faults per fq_vcp_classify_fault, bad tag
 * -> FAIL/FQ_EVERIFY, an answer more than FQ_VCP_MAX_LATENCY_MS after
 * req->sent_ms (when set) -> RETRY/FQ_EEXPIRED (discarded: its clock would
 * be off by the delay).  Return codes: 0, FQ_ENOTPAIRED, FQ_EFAULT,
 * FQ_EVERIFY, FQ_EEXPIRED, FQ_EPROTO, FQ_ECRYPTO, -ENOMEM (err says why).  key is borrowed and must
 * outlive the session. */
int fq_vcp_handshake_finish(const fq_vcp_key_t *key, const char *vin,
                            const fq_vcp_request_t *req, const uint8_t *reply, size_t len,
                            int64_t now_ms, fq_vcp_session_t **out, fq_vcp_outcome_t *o,
                            fq_err_t *err);

/* Create a session from SessionInfo bytes WITHOUT verifying a tag (the CLI
 * `proto sign` and tests; never for bytes from the network).  now_ms is
 * the local time at which clock_time was read.  routing: 16 bytes or NULL
 * for random. */
int fq_vcp_session_from_info(const fq_vcp_key_t *key, const char *vin, int domain,
                             const uint8_t *info, size_t info_len, int64_t now_ms,
                             const uint8_t *routing, fq_vcp_session_t **out, fq_err_t *err);

void fq_vcp_session_destroy(fq_vcp_session_t **s);

/* Accessors. */
int fq_vcp_session_domain(const fq_vcp_session_t *s);
uint32_t fq_vcp_session_counter(const fq_vcp_session_t *s);
const uint8_t *fq_vcp_session_epoch(const fq_vcp_session_t *s);  /* 16 bytes */
int64_t fq_vcp_session_clock_offset(const fq_vcp_session_t *s);  /* seconds */
const uint8_t *fq_vcp_session_k(const fq_vcp_session_t *s);      /* 16 bytes, secret */
void fq_vcp_session_set_routing(fq_vcp_session_t *s, const uint8_t routing[FQ_VCP_ROUTING_LEN]);
/* True after a reply asked for a resync without session info that
 * verified: handshake again before signing.  Cleared by a resync. */
bool fq_vcp_session_stale(const fq_vcp_session_t *s);

/* Serialize the session's state (VIN, domain, car public key, epoch,
 * counter, clock offset, routing address; not K: it is re-derived on
 * restore) into out[FQ_VCP_SESSION_BLOB_MAX].  Returns the length. */
size_t fq_vcp_session_save(const fq_vcp_session_t *s, uint8_t out[FQ_VCP_SESSION_BLOB_MAX]);
/* The same, but the stored counter is `ahead` past the session's (capped
 * at UINT32_MAX): a reservation.  Counters up to the stored value may be
 * used without saving again; a session restored from these bytes goes on
 * after the reservation, so no counter is ever used twice, whatever
 * crashed in between.  Saving once per `ahead` commands instead of once
 * per command keeps random writes out of every commit. */
size_t fq_vcp_session_save_ahead(const fq_vcp_session_t *s, uint32_t ahead,
                                 uint8_t out[FQ_VCP_SESSION_BLOB_MAX]);
/* Rebuild a session from fq_vcp_session_save() bytes with the same fleet
 * key (key borrowed, must outlive the session).  FQ_EPROTO on bad bytes,
 * FQ_ECRYPTO when the stored public key is not a P-256 point. */
int fq_vcp_session_restore(const fq_vcp_key_t *key, const uint8_t *p, size_t n,
                           fq_vcp_session_t **out, fq_err_t *err);

/* Apply session info received in a reply to req: verify the tag
 * (challenge = req->uuid; if the car's public key changed, K is re-derived
 * first), then: a new epoch is adopted with its counter; within the same
 * epoch the counter never goes down (max of ours and theirs); the clock
 * offset is updated.  Discarded with FQ_EEXPIRED: info answering a request
 * sent more than FQ_VCP_MAX_LATENCY_MS before now_ms, or whose clock is
 * behind the last adopted one in the same epoch.  0, FQ_EVERIFY,
 * FQ_EPROTO, FQ_ENOTPAIRED (status KEY_NOT_ON_WHITELIST), FQ_ECRYPTO,
 * FQ_EEXPIRED.  On error the session is unchanged. */
int fq_vcp_session_resync(fq_vcp_session_t *s, const fq_vcp_request_t *req,
                          const uint8_t *info, size_t info_len,
                          const uint8_t tag[FQ_VCP_TAG_LEN], int64_t now_ms, fq_err_t *err);

/* Options of one signing. */
typedef struct fq_vcp_sign_opts {
  int64_t now_ms;          /* local clock */
  int64_t deadline_ms;     /* the command's deadline (local clock); 0 = none */
  uint32_t lifetime_s;     /* 0 -> FQ_VCP_DEFAULT_LIFETIME_S */
  const uint8_t *uuid;     /* 16 bytes, or NULL for random */
} fq_vcp_sign_opts_t;

/* Sign payload P (CarServer.Action / VCSEC.UnsignedMessage bytes, at most
 * FQ_VCP_MAX_PAYLOAD) as HMAC_PERSONALIZED: counter += 1, expires_at =
 * vehicle now + lifetime but never beyond the deadline, flags = 2.  Appends
 * the RoutableMessage to out and fills *req.  Returns 0; FQ_EEXPIRED when
 * the deadline is already past in vehicle time; FQ_ERANGE when the counter
 * would wrap past UINT32_MAX (a new handshake is needed); FQ_ETOOLARGE;
 * buffer errors.  No allocation when out already has room. */
int fq_vcp_sign(fq_vcp_session_t *s, const uint8_t *payload, size_t len,
                const fq_vcp_sign_opts_t *opts, fq_vcp_request_t *req, fq_buf_t *out,
                fq_err_t *err);

/* Process the car's reply to a signed command:
 *  - request_uuid must equal req->uuid, from_destination.domain (when
 *    present) req->domain (else FQ_EPROTO);
 *  - session info + tag, when present, are verified and applied
 *    (fq_vcp_session_resync) before anything else;
 *  - a signedMessageStatus fault is classified (fq_vcp_classify_fault).
 *    RESYNC_RETRY means: retry once; when the reply carried no session info
 *    that verified, the session is marked stale (fq_vcp_session_stale())
 *    and the caller must handshake again before re-signing;
 *    OperationStatus WAIT -> RETRY, ERROR without a fault -> UNKNOWN (the
 *    request was authentic: the car may have run it);
 *  - an AES_GCM_Response_data reply is decrypted (AAD = SHA256(response
 *    metadata)); a reply counter already seen for req -> FQ_EREPLAY, a bad
 *    GCM tag -> FQ_EVERIFY;
 *  - a reply with neither a fault nor AES-GCM response data to a request
 *    that set FQ_VCP_FLAG_ENCRYPT_RESPONSE (every fq_vcp_sign request) is
 *    not authenticated: refused with FQ_EVERIFY, never OK;
 *  - the application reply is classified (fq_vcp_classify_app_reply); one
 *    that does not decode is UNKNOWN (FQ_EPROTO in o->error), not a
 *    failure: the car authenticated the command and may have run it.
 * The decrypted (or plain) application bytes are appended to app (may be
 * NULL).  Returns 0 whenever o classifies a genuine reply (even a failure
 * of the command).  Returns FQ_EPROTO / FQ_EVERIFY / FQ_EREPLAY when the
 * reply itself is refused; o->action is then UNKNOWN (the command may have
 * reached the car) with the reason.  req->seen records accepted reply
 * counters. */
int fq_vcp_open_reply(fq_vcp_session_t *s, fq_vcp_request_t *req, const uint8_t *reply,
                      size_t len, int64_t now_ms, fq_buf_t *app, fq_vcp_outcome_t *o,
                      fq_err_t *err);

/* ---------------------------------------------------------------------- */
/* Command payloads decoded (the simulated car, `fleetq proto decode`)     */

/* Decoded command payload: the Fleet API command name of our table
 * ("door_lock", "set_charge_limit", ...) and its parameters. */
typedef struct fq_vcp_app_cmd {
  char name[48];
  struct {
    const char *name;   /* static string: "percent", "on", ... */
    int type;           /* FQ_PT_BOOL / FQ_PT_INT / FQ_PT_FLOAT / FQ_PT_STR */
    bool b;
    int64_t i;
    double f;
    char s[256];
  } params[12];
  size_t nparams;
} fq_vcp_app_cmd_t;

/* Decode a CarServer.Action (INFOTAINMENT) or VCSEC.UnsignedMessage
 * (VCSEC) into our command name and params.  FQ_EPROTO when undecodable,
 * FQ_EUNKCMD when it is valid protobuf but none of our commands (the car
 * answers INVALID_COMMAND / an error), FQ_EPROTO also for more than
 * FQ_VCP_MAX_PAYLOAD bytes or a domain without commands.  out is
 * overwritten (no memory is kept); thread safe. */
int fq_vcp_app_decode_command(int domain, const uint8_t *p, size_t n, fq_vcp_app_cmd_t *out,
                              fq_err_t *err);

#endif
