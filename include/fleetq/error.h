/*
 * fleetq error codes.
 *
 * Every fallible fleetq function returns an int: 0 on success, a negative
 * errno value, or one of the project codes below (also negative).  The codes
 * are declared once in the X-macro FQ_ERRORS, which yields the enum, the
 * stable wire name sent to clients ("bad_request", ...) and a short text.
 *
 * Detailed, human text about one failure is written once, where the cause is
 * known, into an fq_err_t that the caller lends; only the request boundary
 * puts it in a reply, a status event or a log line.
 */
#ifndef FLEETQ_ERROR_H
#define FLEETQ_ERROR_H

#include <stddef.h>

/* X(enum name, wire name, short text).  The codes of the wire protocol are
 * the first twelve and unknown_account (added later, so at the end: a
 * command record stores its error as this number, so a new code is always
 * appended, never inserted); the rest are internal and reach the wire as
 * "internal" unless a module maps them to a wire code. */
#define FQ_ERRORS(X)                                                            \
  X(FQ_EBADREQ, "bad_request", "malformed request")                            \
  X(FQ_EVERSION, "unsupported_version", "unsupported protocol version")        \
  X(FQ_EUNKCMD, "unknown_command", "unknown command")                          \
  X(FQ_EBADPARAM, "bad_param", "invalid parameter")                            \
  X(FQ_EIDEMMISMATCH, "idempotency_mismatch",                                  \
    "idempotency key reused with a different request")                         \
  X(FQ_ENOTFOUND, "not_found", "not found")                                    \
  X(FQ_ENOTCANCEL, "not_cancellable", "command can no longer be cancelled")    \
  X(FQ_EFORBIDDEN, "forbidden", "forbidden")                                   \
  X(FQ_EBUSY, "busy", "busy, try again")                                       \
  X(FQ_ESTORFULL, "storage_full", "storage full")                              \
  X(FQ_ETOOLARGE, "too_large", "too large")                                    \
  X(FQ_EINTERNAL, "internal", "internal error")                                \
  X(FQ_ESTORAGE, "storage_error", "storage error")                             \
  X(FQ_ECRYPTO, "crypto_error", "cryptographic operation failed")              \
  X(FQ_EPROTO, "protocol_error", "malformed protocol message")                 \
  X(FQ_EVERIFY, "verify_failed", "authentication tag mismatch")                \
  X(FQ_EEXPIRED, "expired", "expired")                                         \
  X(FQ_ECONFIG, "config_error", "invalid configuration")                       \
  X(FQ_EKEYFILE, "key_file_error", "unusable key file")                        \
  X(FQ_EHTTP, "http_error", "HTTP request failed")                             \
  X(FQ_EAUTH, "auth_error", "authentication failed")                           \
  X(FQ_ESCOPE, "missing_scope", "OAuth scope missing")                         \
  X(FQ_ENOTPAIRED, "key_not_paired", "virtual key not paired")                 \
  X(FQ_EFAULT, "vehicle_fault", "vehicle reported a fault")                    \
  X(FQ_EREPLAY, "replay", "replayed message")                                  \
  X(FQ_ERANGE, "out_of_range", "value out of range")                          \
  X(FQ_ENOTREGISTERED, "not_registered",                                       \
    "app's partner account not registered in the region")                     \
  X(FQ_ELEGAL, "unavailable_for_legal_reasons", "refused for legal reasons")   \
  X(FQ_EMOBILEOFF, "mobile_access_disabled", "vehicle owner disabled Mobile access")  \
  X(FQ_EASLEEP, "vehicle_asleep", "vehicle is asleep and was not woken")         \
  X(FQ_EUNKACCT, "unknown_account", "account not registered with fleetqd")                 \
  X(FQ_EBUDGET, "budget_exceeded", "the tenant's daily budget is used up")

enum fq_error {
  FQ_ERROR_BASE_ = -10000,
#define FQ__ERR_ENUM(name, wire, text) name,
  FQ_ERRORS(FQ__ERR_ENUM)
#undef FQ__ERR_ENUM
  FQ_ERROR_END_
};

/* Human text for code (a project code or a negative errno).  Never NULL.
 * Thread-safe, and the one way fleetq turns an errno into text
 * (scripts/checksrc.sh bans strerror()): write fq_strerror(-errno).  The
 * string is static, except for an errno the C library does not know, whose
 * text lives in a per-thread buffer until this thread's next call. */
const char *fq_strerror(int code);

/* Stable name for code: the wire name for the wire codes, the internal
 * name for internal codes, "internal" for errno values.  Static. */
const char *fq_errname(int code);

/* Wire-visible name: internal codes and errno values map to "internal". */
const char *fq_wire_errname(int code);

/* Parse a wire name back into its code; returns 0 when unknown. */
int fq_errcode(const char *name);

/* Detail about one failure, filled where the cause is known. */
#define FQ_ERRMSG_MAX 256
typedef struct fq_err {
  int code;                   /* 0 when no error was recorded */
  char msg[FQ_ERRMSG_MAX];    /* NUL-terminated, never holds secrets */
} fq_err_t;

/* Record code and a printf-style message in err (which may be NULL) and
 * return code, so callers can write `return fq_errf(err, FQ_EBADPARAM, ...)`.
 * The first error recorded wins only if it is not overwritten: this call
 * always overwrites. */
int fq_errf(fq_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reset err to "no error". */
void fq_err_clear(fq_err_t *err);

#endif
