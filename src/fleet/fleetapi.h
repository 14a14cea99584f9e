/*
 * What a Fleet API answer means for a command: pure functions that turn an
 * HTTP status, a few headers and a body into one class the dispatcher acts
 * on (succeed, wake, switch region, fall back to REST, refresh, park, fail,
 * or "unknown: may have executed"), with a human reason that tells the
 * user what to do.  Rules: /work/shared/spec/fleet-api.md §1.3, §3, §5.2,
 * §7.4 and §8.1; where the official SDK and the docs differ, the choice
 * that never executes a command twice wins.
 *
 * Also: the regional base URLs, the host check for 421 redirects, and the
 * reason texts for a missing OAuth scope and an unpaired key.
 *
 * Everything here is pure and thread safe; nothing allocates.
 */
#ifndef FQ_FLEETAPI_H
#define FQ_FLEETAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"
#include "http.h"

/* The longest wait a 429 may ask for (Retry-After, RateLimit-Reset or the
 * body's "Retry in N seconds", in any form): one day, the longest a command
 * may live and the longest an account is parked. */
#define FQ_FA_RETRY_AFTER_MAX_MS 86400000

typedef enum fq_fa_class {
  FQ_FA_SUCCESS = 0,      /* done (a signed reply still needs its fault checked) */
  FQ_FA_REJECTED,         /* the car answered and refused: result:false; final */
  FQ_FA_ASLEEP,           /* 408, or 503/500 "vehicle offline or asleep": wake, retry */
  FQ_FA_WRONG_REGION,     /* 421 with an acceptable host in base_url: switch, retry */
  FQ_FA_LEGACY,           /* 422 on signed_command: use the REST endpoint */
  FQ_FA_MISSING_SCOPE,    /* 403 missing scopes: final, user must re-consent */
  FQ_FA_PROTOCOL_REQUIRED,/* 403 "Vehicle Command Protocol required": sign it */
  FQ_FA_UNAUTHORIZED,     /* 401: refresh the token once, retry */
  FQ_FA_RATE_LIMITED,     /* 429: park until retry_after_ms, retry */
  FQ_FA_NOT_PAIRED,       /* key not paired (proxy-style 500 body): final */
  FQ_FA_CLIENT_ERROR,     /* other 4xx (and 3xx, a bad 421): final, not executed */
  FQ_FA_TRANSIENT,        /* not executed, try again: 503, connect failures */
  FQ_FA_UNKNOWN,          /* may have executed: 500/502/504/540, lost or
                             truncated reply, unreadable 200 */
  FQ_FA_ACCOUNT_REFUSED,  /* 412, 451, 401 mobile_access_disabled: final, and the
                             same answer awaits every command of the account */
} fq_fa_class_t;

/* Which endpoint was called: decides how a 2xx body is read and what a
 * 422 means. */
typedef enum fq_fa_endpoint {
  FQ_FA_EP_SIGNED = 0,    /* POST /api/1/vehicles/{vin}/signed_command */
  FQ_FA_EP_REST_COMMAND,  /* POST /api/1/vehicles/{vin}/command/{name} */
  FQ_FA_EP_WAKE,          /* POST /api/1/vehicles/{vin}/wake_up (also GET vehicle) */
  FQ_FA_EP_ENERGY,        /* POST /api/1/energy_sites/{id}/... */
  FQ_FA_EP_OTHER,
} fq_fa_endpoint_t;

typedef struct fq_fa_input {
  long status;
  const uint8_t *body;        /* may be NULL with body_len 0 */
  size_t body_len;
  const char *retry_after;    /* header values or NULL / "" */
  const char *alt_svc;
  const char *ratelimit_reset;
  fq_fa_endpoint_t endpoint;
  const char *command;        /* REST name, for "already in that state" replies; may be NULL */
  const char *scope_name;     /* scope the command needs, for the 403 reason; may be NULL */
  const char *client_id;      /* for the re-consent link; may be NULL */
  const char *extra_host;     /* host[:port] accepted in a 421 besides Tesla's (simulator) */
  int64_t now_unix_ms;        /* for Retry-After dates */
  uint8_t *rm_buf;            /* SIGNED: where the decoded RoutableMessage goes */
  size_t rm_cap;
} fq_fa_input_t;

#define FQ_FA_REASON_MAX 512

typedef struct fq_fa_result {
  fq_fa_class_t cls;
  int code;                   /* FQ_E* to report if the command ends here; 0 on success */
  bool may_have_executed;     /* true only for UNKNOWN */
  int64_t retry_after_ms;     /* RATE_LIMITED: park this long (at most
                                 FQ_FA_RETRY_AFTER_MAX_MS); TRANSIENT: suggested */
  char base_url[256];         /* WRONG_REGION: "https://HOST" */
  char error[96];             /* the envelope's `error`, cleaned; "" when none */
  /* Human text, says what happens or what to do; for UNKNOWN only what
   * happened: the caller says what it means for the command (sent again
   * when idempotent, else "may have been executed: check the vehicle
   * ..."), once. */
  char reason[FQ_FA_REASON_MAX];
  /* 2xx details */
  bool has_result;            /* REST {"response":{"result":...}} seen */
  bool result;
  char car_reason[128];       /* its `reason`, cleaned */
  char vehicle_state[16];     /* WAKE: "online", "asleep", "offline", or "" */
  size_t rm_len;              /* SIGNED: bytes written to rm_buf */
} fq_fa_result_t;

/* Classify a complete HTTP answer.  Always fills out; returns 0, or
 * -EINVAL for NULL arguments. */
int fq_fa_classify(const fq_fa_input_t *in, fq_fa_result_t *out);

/* Classify a request that got no complete answer (fq_http outcome other
 * than COMPLETE): NOT_SENT -> TRANSIENT, UNKNOWN/TRUNCATED -> UNKNOWN.
 * detail is the transport's text (may be NULL). */
void fq_fa_classify_transport(fq_http_outcome_t outcome, const char *detail, fq_fa_result_t *out);

/* Stable lower-case name of a class ("success", "asleep", ...); static. */
const char *fq_fa_class_name(fq_fa_class_t c);

/* Fleet API base URL of a region ("na", "eu", "cn"); NULL when unknown.
 * Static string without a trailing slash. */
const char *fq_fa_region_base_url(const char *region);
/* The reverse: the region ("na", "eu", "cn") whose Fleet API base URL
 * base_url is (case-insensitive, trailing slashes ignored); NULL for any
 * other URL (a simulator, a proxy).  Static string. */
const char *fq_fa_base_url_region(const char *base_url);

/* True when host (no scheme, no path, lower or upper case) may receive
 * our tokens after a 421: a name under .tesla.com, .tesla.cn or
 * .teslamotors.com, or exactly extra_host (may carry a port) when given. */
bool fq_fa_host_allowed(const char *host, const char *extra_host);

/* The missing-scope reason:
 * "missing OAuth scope <scope>: update the app's access at
 *  https://auth.tesla.com/user/revoke/consent?revoke_client_id=<client id>
 *  and connect again".  Writes at most cap bytes (NUL included); returns
 * the length it needed (as snprintf). */
int fq_fa_scope_reason(char *out, size_t cap, const char *scope, const char *client_id);

/* The unpaired-key reason:
 * "vehicle rejected request: your public key has not been paired with the
 *  vehicle; pair it by opening https://tesla.com/_ak/<domain> on the phone
 *  with the Tesla app".  Returns as snprintf. */
int fq_fa_pairing_reason(char *out, size_t cap, const char *domain);

#endif
