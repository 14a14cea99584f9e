/*
 * The one table of fleetq error codes: names and texts for fq_strerror(),
 * fq_errname() and the fq_err_t helpers.
 */
#include "fleetq/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct errdef {
  int code;
  const char *wire;
  const char *text;
};

static const struct errdef errdefs[] = {
#define FQ__ERR_DEF(name, wire, text) {name, wire, text},
    FQ_ERRORS(FQ__ERR_DEF)
#undef FQ__ERR_DEF
};

static const struct errdef *find(int code) {
  if (code > FQ_ERROR_BASE_ && code < FQ_ERROR_END_)
    return &errdefs[code - FQ_ERROR_BASE_ - 1];
  return NULL;
}

const char *fq_strerror(int code) {
  const struct errdef *d = find(code);
  if (d) return d->text;
  if (code == 0) return "success";
  if (code < 0 && code > -4096) {
    /* strerror() may share one buffer between threads; the GNU strerror_r
     * (the tree builds with _GNU_SOURCE) returns a static text or fills
     * this thread's own buffer, so any thread may call fq_strerror(). */
    static _Thread_local char buf[64];
    return strerror_r(-code, buf, sizeof buf);
  }
  return "unknown error";
}

const char *fq_errname(int code) {
  const struct errdef *d = find(code);
  return d ? d->wire : "internal";
}

const char *fq_wire_errname(int code) {
  if ((code >= FQ_EBADREQ && code <= FQ_EINTERNAL) || code == FQ_EUNKACCT || code == FQ_EBUDGET)
    return fq_errname(code);
  return "internal";
}

int fq_errcode(const char *name) {
  for (size_t i = 0; i < sizeof errdefs / sizeof errdefs[0]; i++)
    if (strcmp(errdefs[i].wire, name) == 0) return errdefs[i].code;
  return 0;
}

int fq_errf(fq_err_t *err, int code, const char *fmt, ...) {
  if (!err) return code;
  err->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return code;
}

void fq_err_clear(fq_err_t *err) {
  if (!err) return;
  err->code = 0;
  err->msg[0] = '\0';
}
