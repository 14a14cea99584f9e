/*
 * fleetq wire protocol v1 (see proto/wire-protocol.md): the strict, bounded
 * msgpack decoder for requests, and the encoders for replies and status
 * events.  Used by the daemon, the CLI, the replay tool and the tests.
 *
 * Decoded strings and params are borrowed: they point into the bytes that
 * were decoded and are valid only as long as those bytes are.  All
 * functions are reentrant and thread safe.
 */
#ifndef FLEETQ_WIRE_H
#define FLEETQ_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"

#include "fleetq/buf.h"
#include "fleetq/commands.h"

#define FQ_WIRE_VERSION 1
/* Default ZMQ_MAXMSGSIZE and the largest request body the decoder takes. */
#define FQ_WIRE_MAX_MSG (256 * 1024)
/* Largest `params` map, in msgpack bytes. */
#define FQ_WIRE_MAX_PARAMS_BYTES (16 * 1024)
/* Deepest container nesting accepted anywhere in a request. */
#define FQ_WIRE_MAX_DEPTH 8
#define FQ_WIRE_MAX_HISTORY 1000
/* Largest `req` (its msgpack encoding, type byte included): every reply
 * echoes it, so it bounds what a client can make fleetqd hold for it. */
#define FQ_WIRE_MAX_REQ 256
/* Envelope of a request: the frames a client sends before the body (the
 * routing id fleetqd's ROUTER adds is not counted), at most this many and
 * each at most FQ_WIRE_MAX_ENVELOPE_FRAME bytes (ZeroMQ's own limit for a
 * routing id); they are echoed in front of the reply.  The ingress, the
 * shards and the auth thread all use this limit. */
#define FQ_WIRE_MAX_ENVELOPE 8
#define FQ_WIRE_MAX_ENVELOPE_FRAME 255
#define FQ_WIRE_DEFAULT_TTL_MS 60000
#define FQ_WIRE_MAX_TTL_MS 86400000
/* How far ahead of the daemon's clock a submit's not_before may be. */
#define FQ_WIRE_MAX_SCHEDULE_MS (30LL * 86400000)

/* Command states; X(enum, wire name, terminal).  A record stores its state
 * as this number: new states go at the end. */
#define FQ_STATES(X)                      \
  X(FQ_ST_QUEUED, "queued", 0)            \
  X(FQ_ST_DISPATCHING, "dispatching", 0)  \
  X(FQ_ST_WAKING, "waking", 0)            \
  X(FQ_ST_RETRYING, "retrying", 0)        \
  X(FQ_ST_SENT, "sent", 0)                \
  X(FQ_ST_SUCCEEDED, "succeeded", 1)      \
  X(FQ_ST_FAILED, "failed", 1)            \
  X(FQ_ST_UNKNOWN, "unknown", 1)          \
  X(FQ_ST_EXPIRED, "expired", 1)          \
  X(FQ_ST_CANCELLED, "cancelled", 1)      \
  X(FQ_ST_SUPERSEDED, "superseded", 1)    \
  X(FQ_ST_SCHEDULED, "scheduled", 0)

enum fq_state {
#define FQ__ST_ENUM(e, name, term) e,
  FQ_STATES(FQ__ST_ENUM)
#undef FQ__ST_ENUM
  FQ_ST_COUNT_
};

/* Wire name of a state ("queued"...); "?" when out of range. */
const char *fq_state_name(int st);
/* Parse a state name; -1 when unknown. */
int fq_state_parse(const char *s, size_t n);
bool fq_state_terminal(int st);

typedef struct fq_str {
  const char *p;
  size_t n;
} fq_str_t;

enum fq_op {
  FQ_OP_SUBMIT = 1,
  FQ_OP_GET,
  FQ_OP_CANCEL,
  FQ_OP_HISTORY,
  FQ_OP_PING,
  FQ_OP_ADMIN, /* account management; see proto/wire-protocol.md */
  FQ_OP_HEALTH,
  FQ_OP_USAGE, /* per-day budget counts (issue 16) */
  FQ_OP_CAMPAIGN,       /* one command to many devices (issue 16) */
  FQ_OP_CAMPAIGN_GET,
  FQ_OP_CAMPAIGN_ABORT,
};

/* Campaigns: the most devices over all parts, the most parts, the longest
 * campaign key (so that "<key>/<vin or site>" fits a 128-byte key) and
 * the highest rate (commands/s). */
#define FQ_WIRE_MAX_CAMPAIGN_DEVICES 100000
#define FQ_WIRE_MAX_CAMPAIGN_PARTS 1000
#define FQ_WIRE_MAX_CAMPAIGN_KEY 100
#define FQ_WIRE_MAX_CAMPAIGN_RATE 100000

/* health: a shard with queued work and no commit for longer than this
 * is stuck, unless the request says `stuck_ms`. */
#define FQ_WIRE_DEFAULT_STUCK_MS 30000
/* usage: most days a request may ask for (the days the daemon keeps). */
#define FQ_WIRE_MAX_USAGE_DAYS 90

/* One decoded request.  Fields not sent are zero / {NULL, 0}. */
typedef struct fq_request {
  int op;
  fq_str_t tenant, key, account, vin, command, id;
  uint64_t site;                 /* energy site id; 0 when `vin` is used */
  const fq_cmd_t *cmd;           /* resolved and validated (submit) */
  fq_pval_t params[FQ_MAX_PARAMS];
  size_t nparams;
  const uint8_t *params_raw;     /* the `params` map as sent, or NULL */
  size_t params_raw_len;
  int64_t ttl_ms;                /* 0 when not given */
  bool coalesce;
  bool no_wake;                  /* `wake: false` (the default is true) */
  bool has_not_before;           /* `not_before` given (0 is a time, long past) */
  int64_t not_before;            /* unix ms; 0 when not given */
  const uint8_t *req_raw;        /* msgpack bytes of `req`, echoed verbatim */
  size_t req_raw_len;
  uint32_t shard;                /* history */
  uint64_t after;                /* history: seq, or tseq when `tenant` is given */
  uint32_t limit;                /* history; default 100 */
  int64_t stuck_ms;              /* health; default FQ_WIRE_DEFAULT_STUCK_MS */
  uint32_t days;                 /* usage: UTC days back, 1 = today; default 7 */
  /* campaign: the `devices` array as sent (checked: see
   * fq_wire_devices_next), its length, and the optional fields. */
  const uint8_t *devices_raw;
  size_t devices_len;
  uint32_t ndevices;
  bool has_rate, has_ratio;
  double rate, max_failure_ratio;
  uint32_t part, parts;          /* 1-based; 1 / 1 when not given */
  fq_str_t admin_action;         /* admin: "account_add", ... */
  const uint8_t *admin_raw;      /* admin: the whole body, for its handler */
  size_t admin_raw_len;
} fq_request_t;

/* Decode and validate one request body (the last frame).  Strict: unknown
 * keys, wrong types, out-of-range values, trailing bytes, containers whose
 * declared size exceeds the bytes left, nesting deeper than
 * FQ_WIRE_MAX_DEPTH are errors.  Submit params are checked against the
 * command table.  On error returns the wire code (FQ_EBADREQ,
 * FQ_EVERSION, FQ_EUNKCMD, FQ_EBADPARAM, FQ_ETOOLARGE) with err->msg
 * naming the field; req->req_raw is still set when the body was a
 * well-formed map holding `req` (a scalar of at most FQ_WIRE_MAX_REQ
 * encoded bytes: a larger one is bad_request and never echoed), so the
 * error reply can echo it.
 *
 * Never allocates; reads each byte a bounded number of times (a typical
 * submit decodes in well under a microsecond).  Messages are ASCII and
 * name top-level fields in quotes (`"tenant": expected string, got
 * integer`) and parameters as params.<name>.  req is fully rewritten
 * (zeroed first; limit defaults to 100).  get / cancel: either `id`
 * (optionally with `tenant`) or `tenant` + `key`.  admin: only `action`
 * is checked here; the handler validates the rest of admin_raw. */
int fq_wire_decode_request(const uint8_t *buf, size_t len, fq_request_t *req, fq_err_t *err);

/* The devices of a campaign request, one by one.  begin checks that buf
 * holds an array and gives its count; next gives 1 and the device, 0
 * after the last, or a code (FQ_EBADREQ naming the device's index) for a
 * device that is not a map of `vin` (a valid VIN) or `site` (positive),
 * and `account` (1..128 bytes, no control characters).  Views borrow
 * from buf. */
typedef struct fq_wire_device {
  fq_str_t vin;                  /* {NULL, 0} for a site */
  uint64_t site;
  fq_str_t account;
} fq_wire_device_t;
typedef struct fq_wire_devit {
  const uint8_t *p, *end;
  uint32_t index, left;
} fq_wire_devit_t;
int fq_wire_devices_begin(fq_wire_devit_t *it, const uint8_t *buf, size_t len, uint32_t *count,
                          fq_err_t *err);
int fq_wire_devices_next(fq_wire_devit_t *it, fq_wire_device_t *d, fq_err_t *err);
/* The device's VIN or decimal site id, NUL-terminated; its length or 0. */
size_t fq_wire_device_name(const fq_wire_device_t *d, char *out, size_t cap);

/* Decode a stored or received `params` map (same rules as in a request:
 * bounded, at most FQ_MAX_PARAMS entries and FQ_WIRE_MAX_PARAMS_BYTES,
 * string names, no duplicates, values bool / int / float / UTF-8 string /
 * JSON-representable map) into out[FQ_MAX_PARAMS]; *n receives the count.
 * Names are not checked against a command: call fq_cmd_validate() for
 * that.  Returns 0, FQ_EBADREQ, FQ_EBADPARAM or FQ_ETOOLARGE; views
 * borrow from buf. */
int fq_wire_decode_params(const uint8_t *buf, size_t len, fq_pval_t *out, size_t *n,
                          fq_err_t *err);

/* 32-byte SHA-256 over the canonical content of a submit: account, device,
 * command and params (sorted by name, types normalised: an integer sent for
 * a FLOAT parameter hashes as that number), and not_before when given (a
 * retry with another time is another request).  ttl_ms, coalesce, wake and req are
 * not part of it: a retry may change those.  Nested maps (tou_settings)
 * hash by their bytes as sent.  Returns 0, or -ENOMEM / FQ_ECRYPTO if
 * OpenSSL failed (out is then zeroed: do not use it). */
int fq_wire_request_hash(const fq_request_t *req, uint8_t out[32]);

/* Device key used for sharding and queues: "v:<VIN>" or "s:<site id>".
 * Returns its length, or 0 if it did not fit in cap. */
size_t fq_wire_device_key(const fq_request_t *req, char *out, size_t cap);

/* One status event (see the wire spec).  Optional fields: vin.p == NULL
 * when the device is a site; error == 0, http == 0, fault < 0, prev < 0
 * mean nil. */
typedef struct fq_event {
  fq_str_t id, tenant, key, vin, command, reason;
  uint64_t site;
  int state, prev;
  int64_t at;
  uint32_t attempt;
  int error;    /* project error code or 0 */
  int http;
  int fault;
  uint32_t shard;
  uint64_t seq;
  uint64_t tseq; /* per (tenant, shard) sequence; 0 = none (stored before tseq existed) */
  fq_str_t campaign; /* the campaign id of a campaign's device command; {NULL, 0}: none */
} fq_event_t;

/* Append the event's msgpack map to out. */
int fq_wire_event_pack(struct fq_buf *out, const fq_event_t *ev);
/* Decode an event map; strings borrow from buf.  Unknown error names
 * decode as FQ_EINTERNAL; unknown keys are skipped (newer daemons may add
 * some).  id, tenant, command, state, shard, seq and one of vin / site are
 * required; tseq is optional (0 when absent: an event stored by an older
 * daemon).  Returns 0 or FQ_EPROTO. */
int fq_wire_event_unpack(const uint8_t *buf, size_t len, fq_event_t *ev, fq_err_t *err);
/* Topic frame "<tenant>/<vin or site>" into out; returns its length or 0
 * when it does not fit. */
size_t fq_wire_event_topic(const fq_event_t *ev, char *out, size_t cap);

/* Replies.  Each appends one msgpack map to out; req_raw (may be NULL) is
 * echoed as `req`. */
int fq_wire_reply_error(struct fq_buf *out, int code, const char *message,
                        const uint8_t *req_raw, size_t req_raw_len);
/* budget_exceeded with `reset_at` (unix ms: the next UTC midnight). */
int fq_wire_reply_budget(struct fq_buf *out, const char *message, int64_t reset_at,
                         const uint8_t *req_raw, size_t req_raw_len);
/* One row of a usage reply: a UTC day's counts of a tenant and account. */
typedef struct fq_usage_row {
  char date[16];                 /* YYYY-MM-DD */
  char tenant[65];
  char account[129];
  int64_t billable, wakeups;
} fq_usage_row_t;
int fq_wire_reply_usage(struct fq_buf *out, const fq_usage_row_t *rows, size_t n,
                        const uint8_t *req_raw, size_t req_raw_len);
int fq_wire_reply_submit(struct fq_buf *out, const char *id, int state, bool dup,
                         const uint8_t *req_raw, size_t req_raw_len);
int fq_wire_reply_ping(struct fq_buf *out, const char *version, uint32_t shards,
                       const uint8_t *req_raw, size_t req_raw_len);
/* `events` are n already-packed event maps, spliced in as they are;
 * `first` is where retained history begins (the lowest seq, or with a
 * tenant tseq, still stored: older events were pruned). */
int fq_wire_reply_history(struct fq_buf *out, const fq_str_t *events, size_t n, uint64_t next,
                          uint64_t first, const uint8_t *req_raw, size_t req_raw_len);
/* `command_map` is an already-packed map spliced in as `command` (get's
 * reply, and cancel's success reply: the map then shows the cancelled
 * state). */
int fq_wire_reply_command(struct fq_buf *out, const uint8_t *command_map, size_t len,
                          const uint8_t *req_raw, size_t req_raw_len);
/* {ok: false, error: "not_cancellable", message, state, req}. */
int fq_wire_reply_not_cancellable(struct fq_buf *out, const char *message, int state,
                                  const uint8_t *req_raw, size_t req_raw_len);

#endif
