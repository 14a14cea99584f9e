/*
 * fleetq-replay: the option helpers gen.c and run.c share (usage errors,
 * strict number parsing, JSON strings of the reports).  See replay.h.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "replay.h"

int fq_replay_usage_err(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "fleetq-replay %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see 'fleetq-replay %s --help')\n", cmd);
  return 2;
}

bool fq_replay_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end = NULL;
  if (!s || !*s || *s == '-' || *s == '+') return false;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || !end || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool fq_replay_parse_double(const char *s, double lo, double hi, double *out) {
  char *end = NULL;
  if (!s || !*s) return false;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || !end || *end || !isfinite(v) || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int fq_replay_json_str(fq_buf_t *out, const char *s) {
  int rc = fq_buf_append_str(out, "\"");
  for (const unsigned char *p = (const unsigned char *)s; !rc && *p; p++) {
    if (*p == '"' || *p == '\\')
      rc = fq_buf_printf(out, "\\%c", *p);
    else if (*p < 0x20)
      rc = fq_buf_printf(out, "\\u%04x", *p);
    else
      rc = fq_buf_append(out, p, 1);
  }
  return rc ? rc : fq_buf_append_str(out, "\"");
}
