/*
 * A small C client for fleetqd: a request socket (ZeroMQ DEALER) with a
 * blocking request/reply call and a pipelined send/recv pair, builders for
 * the msgpack requests of the wire protocol (submit, get, cancel, history,
 * ping), a status-event subscriber (SUB), a bounded reader for replies, and
 * a msgpack -> JSON printer.  Used by the `fleetq` CLI, the benchmarks and
 * the unit tests.
 *
 * Framing: the daemon's ingress is a ROUTER.  A DEALER peer sends the body
 * as a single frame and gets the reply as a single frame: ROUTER adds and
 * strips the peer's identity itself, so no empty delimiter frame is needed
 * (a REQ socket would add one, and the daemon echoes it back unchanged).
 *
 * Authentication: with a client key file and the server's public key
 * (fq_client_opts_t), both sockets speak ZeroMQ CURVE: the traffic is
 * encrypted and fleetqd's ZAP handler admits only the keys it lists.
 * Without them the sockets are plaintext (NULL mechanism), which fleetqd
 * accepts only when it runs without CURVE on loopback or ipc.
 *
 * Threads: a client or subscriber is used by one thread at a time (ZeroMQ
 * sockets are not thread safe).  The builders and readers are reentrant.
 */
#ifndef FLEETQ_CLIENT_H
#define FLEETQ_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "fleetq/buf.h"
#include "fleetq/commands.h"
#include "fleetq/error.h"

/* Largest reply the client accepts (ZMQ_MAXMSGSIZE of its sockets); a
 * history page of 1000 events fits comfortably. */
#define FQ_CLIENT_MAX_REPLY (4 * 1024 * 1024)
/* Deepest nesting the reply reader and the JSON printer descend into. */
#define FQ_CLIENT_MAX_DEPTH 32

/* ------------------------------------------------------------------ */
/* Connection options and CURVE                                        */

/* How to reach fleetqd.  Every string is borrowed for the duration of the
 * call that takes the options only (the library keeps copies). */
typedef struct fq_client_opts {
  const char *endpoint;       /* "tcp://127.0.0.1:5555"; the publisher's for fq_sub_new_opts */
  int timeout_ms;             /* request timeout (<= 0: 5000); unused by the subscriber */
  const char *curve_key_file; /* client key file (public+secret), or NULL */
  const char *server_key;     /* server's Z85 public key, or NULL */
} fq_client_opts_t;

/* Environment variables that give the CURVE settings when the program's
 * flags do not (a flag always wins). */
#define FQ_ENV_CURVE_KEY "FLEETQ_CURVE_KEY"
#define FQ_ENV_SERVER_KEY "FLEETQ_SERVER_KEY"

/* Fill o->curve_key_file and o->server_key, when NULL, from
 * FLEETQ_CURVE_KEY and FLEETQ_SERVER_KEY (an empty variable counts as
 * unset).  The strings then borrow from the environment. */
void fq_client_opts_from_env(fq_client_opts_t *o);

/* For programs whose flags are --curve-key FILE and --server-key Z85
 * (fleetq, fleetq-replay): fill the unset ones from the environment
 * (fq_client_opts_from_env), then check what results as
 * fq_curve_creds_load would (both or neither, the server key's form, the
 * key file), with messages that name the flags and variables, so that a
 * mistake is reported before anything connects.  Returns 0 or the codes
 * of fq_curve_creds_load. */
int fq_client_opts_resolve(fq_client_opts_t *o, fq_err_t *err);

/* CURVE credentials resolved from fq_client_opts_t: loaded and checked
 * once, applied to any number of sockets.  sec is secret: wipe with
 * fq_curve_creds_wipe(). */
typedef struct fq_curve_creds {
  bool on;         /* false: plaintext, the keys below are empty */
  char server[41]; /* Z85, NUL-terminated */
  char pub[41];
  char sec[41];
} fq_curve_creds_t;

/* Resolve o's curve_key_file and server_key into cc: both NULL gives
 * cc->on = false; both set loads the key file (fq_curve_keyfile_load:
 * regular file, mode 0600, the exact two-line form, a matching pair) and
 * checks the server key.  Returns 0, or with cc wiped: FQ_ECONFIG (only
 * one of the two given, a server key that is not 40 Z85 characters),
 * FQ_EKEYFILE / FQ_ECRYPTO (the key file).  err never holds the secret. */
int fq_curve_creds_load(fq_curve_creds_t *cc, const fq_client_opts_t *o, fq_err_t *err);

/* Make zsock (a ZeroMQ socket about to connect) a CURVE client with cc:
 * ZMQ_CURVE_SERVERKEY, ZMQ_CURVE_PUBLICKEY, ZMQ_CURVE_SECRETKEY.  Does
 * nothing when !cc->on.  Call before zmq_connect.  For programs that
 * drive their own sockets (fleetq-replay); the client and subscriber
 * below do it themselves.  Returns 0 or FQ_EINTERNAL. */
int fq_curve_creds_apply(const fq_curve_creds_t *cc, void *zsock, fq_err_t *err);

/* Wipe cc (OPENSSL_cleanse); cc->on becomes false. */
void fq_curve_creds_wipe(fq_curve_creds_t *cc);

/* ------------------------------------------------------------------ */
/* Request socket                                                      */

typedef struct fq_client fq_client_t;

/* Create a DEALER connected to o->endpoint ("tcp://127.0.0.1:5555").
 * o->timeout_ms (> 0, else 5000) bounds every fq_client_request() and is
 * the default of fq_client_recv(); ZMQ_LINGER is 0 so destroy never
 * blocks on unsent requests.  With CURVE (both o->curve_key_file and
 * o->server_key) every socket the client opens, the first and each fresh
 * one after a timeout, is a CURVE client with those keys.  A monitor on
 * the socket lets requests fail fast with FQ_EAUTH when the server
 * refuses the handshake (see fq_client_recv).  Returns NULL with err set:
 * the codes of fq_curve_creds_load, FQ_EINTERNAL with the ZeroMQ text, or
 * -ENOMEM.  The client owns its own ZeroMQ context. */
fq_client_t *fq_client_new_opts(const fq_client_opts_t *o, fq_err_t *err);

/* fq_client_new_opts without CURVE. */
fq_client_t *fq_client_new(const char *endpoint, int timeout_ms, fq_err_t *err);

/* Close the socket and context; NULLs *c; accepts NULL or *c == NULL. */
void fq_client_destroy(fq_client_t **c);

/* Send one request body and wait for its reply (at most the timeout).
 * The reply body is appended to `reply` (reset first).  Returns 0,
 * -ETIMEDOUT, -EINTR or FQ_EAUTH (the socket is then reconnected with a
 * fresh identity, so a late reply can never be taken for the answer to a
 * later request), FQ_ETOOLARGE (reply above reply's cap) or FQ_EINTERNAL.
 * Must not be mixed with outstanding pipelined requests: their replies
 * would be read first. */
int fq_client_request(fq_client_t *c, const uint8_t *body, size_t len, fq_buf_t *reply,
                      fq_err_t *err);

/* Pipelining: queue one request without waiting (never blocks longer than
 * the timeout when the send queue is full: -EAGAIN).  Replies come back in
 * any order across shards; tell them apart by their echoed `req`. */
int fq_client_send(fq_client_t *c, const uint8_t *body, size_t len, fq_err_t *err);

/* Receive the next reply into `reply` (reset first), waiting at most
 * timeout_ms (< 0: the client's timeout; 0: do not wait).  Returns 0,
 * -ETIMEDOUT, -EINTR (a signal arrived), FQ_ETOOLARGE, FQ_EINTERNAL, or
 * FQ_EAUTH as soon as the handshake is refused: the server rejected the
 * client's CURVE key (ZAP), the mechanisms differ (a CURVE client and a
 * plaintext server or the reverse), or the server closed the connection
 * in two handshakes in a row without one succeeding (what a wrong server
 * key looks like from a CURVE client, and a mechanism mismatch sometimes
 * does).  Frames before the last one (none for a DEALER) are skipped. */
int fq_client_recv(fq_client_t *c, fq_buf_t *reply, int timeout_ms, fq_err_t *err);

/* ------------------------------------------------------------------ */
/* Request builders: each appends one msgpack map to out.  `req` is       */
/* echoed by the daemon; pass has_req = false to leave it out.  Return    */
/* 0, FQ_ETOOLARGE (out's cap) or -ENOMEM.                                */

typedef struct fq_submit_args {
  const char *tenant;
  const char *key;
  const char *account;
  const char *vin;         /* exactly one of vin (non-NULL) ... */
  uint64_t site;           /* ... or site (non-zero) */
  const char *command;
  const fq_pval_t *params; /* borrowed; FQ_PT_MAP values are raw msgpack */
  size_t nparams;
  int64_t ttl_ms;          /* 0: not sent (daemon default) */
  bool coalesce;
  bool no_wake;            /* sends `wake: false` */
  bool has_req;
  int64_t req;
  int64_t not_before;      /* unix ms: `scheduled` until then; 0: not sent.  Last, so
                              that the fields before keep their offsets */
} fq_submit_args_t;

int fq_req_submit(fq_buf_t *out, const fq_submit_args_t *a);
/* op is "get" or "cancel"; give id, or tenant + key (id wins if both). */
int fq_req_lookup(fq_buf_t *out, const char *op, const char *id, const char *tenant,
                  const char *key, bool has_req, int64_t req);
int fq_req_history(fq_buf_t *out, uint32_t shard, uint64_t after, uint32_t limit, bool has_req,
                   int64_t req);
/* history of one tenant's events of the shard (tenant NULL: all tenants,
 * as fq_req_history): `after` and the reply's `next` then count that
 * tenant's tseq instead of the shard's seq. */
int fq_req_history_tenant(fq_buf_t *out, uint32_t shard, const char *tenant, uint64_t after,
                          uint32_t limit, bool has_req, int64_t req);
int fq_req_ping(fq_buf_t *out, bool has_req, int64_t req);

/* Parse one CLI parameter "name=value" into *pv: true/false -> BOOL, a
 * decimal integer -> INT, a decimal number -> FLOAT, anything else -> STR.
 * pv borrows from arg.  Returns 0 or FQ_EBADPARAM (no '=' or empty name). */
int fq_param_parse(const char *arg, fq_pval_t *pv, fq_err_t *err);

/* Convert a JSON object text ("{\"percent\": 80}") into parameters: the
 * values are typed as fq_param_parse() would, nested objects and arrays
 * become FQ_PT_MAP values holding their msgpack bytes.  Names and values
 * are copied into `store` (whose cap bounds the work); out holds at most
 * cap entries, *n receives the count.  `store` must outlive out and must
 * not be appended to afterwards (entries point into it).  Returns 0 or
 * FQ_EBADPARAM (bad JSON, not an object, null value, too many). */
int fq_params_from_json(const char *json, fq_buf_t *store, fq_pval_t *out, size_t cap,
                        size_t *n, fq_err_t *err);

/* ------------------------------------------------------------------ */
/* Reading replies and events                                           */

/* Check that buf holds exactly one well-formed msgpack value whose
 * containers never declare more elements than the bytes left could hold,
 * nested at most FQ_CLIENT_MAX_DEPTH deep.  Returns 0 or FQ_EBADREQ with
 * the offset in err.  Run before handing bytes to msgpack_unpack, whose
 * allocations follow declared sizes. */
int fq_msgpack_check(const uint8_t *buf, size_t len, fq_err_t *err);

/* A decoded reply or event: one msgpack object tree in its own zone. */
typedef struct fq_msg {
  msgpack_unpacked up;
  const msgpack_object *root; /* points into up; a map when decode succeeded */
} fq_msg_t;

/* Check (fq_msgpack_check) and unpack buf, which must be one map.
 * Returns 0 or FQ_EBADREQ; on success free with fq_msg_free().  The tree
 * does not borrow buf. */
int fq_msg_decode(fq_msg_t *m, const uint8_t *buf, size_t len, fq_err_t *err);
void fq_msg_free(fq_msg_t *m);

/* Look up key in a map object; NULL when o is not a map or key absent. */
const msgpack_object *fq_mp_get(const msgpack_object *o, const char *key);
/* Typed accessors: return false when o is NULL or of another type.  A
 * string result borrows from the object tree and is not NUL-terminated. */
bool fq_mp_str(const msgpack_object *o, const char **p, size_t *n);
bool fq_mp_int(const msgpack_object *o, int64_t *v);
bool fq_mp_bool(const msgpack_object *o, bool *v);
/* Compare a str object with a C string. */
bool fq_mp_str_eq(const msgpack_object *o, const char *s);

/* Render any msgpack bytes as JSON into out (appended): maps with
 * non-string keys get their key rendered as JSON text in a string, bin and
 * ext become lower-case hex strings, NaN/Inf become null, depth is bounded
 * by FQ_CLIENT_MAX_DEPTH.  pretty != 0 indents by two spaces.  Returns 0,
 * FQ_EBADREQ (malformed or trailing bytes, too deep) or FQ_ETOOLARGE. */
int fq_msgpack_to_json(const uint8_t *buf, size_t len, fq_buf_t *out, int pretty);

/* ------------------------------------------------------------------ */
/* Status-event subscriber                                              */

typedef struct fq_sub fq_sub_t;

/* Create a SUB connected to o->endpoint (the publisher), subscribed to
 * every prefix in prefixes[0..n) (n == 0: everything), a CURVE client when
 * o gives both keys (o->timeout_ms is not used).  A prefix is matched
 * against the topic frame "<tenant>/<device>", so "acme/" selects one
 * tenant and "acme/5YJ3E1EA7KF000001" one device.  Returns NULL with err
 * set (the codes of fq_client_new_opts). */
fq_sub_t *fq_sub_new_opts(const fq_client_opts_t *o, const char *const *prefixes, size_t n,
                          fq_err_t *err);

/* fq_sub_new_opts without CURVE. */
fq_sub_t *fq_sub_new(const char *endpoint, const char *const *prefixes, size_t n,
                     fq_err_t *err);
void fq_sub_destroy(fq_sub_t **s);

/* Wait until the SUB has completed its connection handshake with the
 * publisher, at most timeout_ms, so that a request sent afterwards will not
 * race the subscription (the subscription itself follows the handshake on
 * the same connection).  Returns 0, -ETIMEDOUT, -EINTR, or FQ_EAUTH at
 * once when the handshake is refused (as for fq_client_recv: the server
 * refused the key, mechanisms differ, or a handshake was cut off twice in
 * a row); the message says which. */
int fq_sub_wait_connected(fq_sub_t *s, int timeout_ms, fq_err_t *err);

/* Receive one event: topic and body are reset and filled.  timeout_ms < 0
 * waits forever.  Returns 0, -ETIMEDOUT, -EINTR (a signal arrived),
 * FQ_EBADREQ (not two frames) or FQ_ETOOLARGE. */
int fq_sub_recv(fq_sub_t *s, fq_buf_t *topic, fq_buf_t *body, int timeout_ms, fq_err_t *err);

#endif
