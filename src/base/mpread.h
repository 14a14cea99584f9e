/*
 * A bounded msgpack cursor reader for untrusted bytes.
 *
 * msgpack-c's unpacker trusts the element counts a message declares and
 * allocates for them before checking that the bytes exist, so a five-byte
 * message can ask for gigabytes.  This reader never allocates: it walks the
 * caller's buffer, hands out borrowed views of strings and binaries, and
 * refuses any container whose declared element count could not possibly be
 * backed by the bytes left (every element takes at least one byte, a map
 * entry at least two) as well as any nesting deeper than the caller allows.
 *
 * Everything here is reentrant; a cursor belongs to one thread.
 */
#ifndef FQ_MPREAD_H
#define FQ_MPREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"

/* Kinds of msgpack objects, as the reader reports them.  Integers are
 * split by sign so that the full uint64 range stays exact: every value
 * >= 0 is FQ__MP_UINT (whatever encoding was used), every value < 0 is
 * FQ__MP_NINT. */
enum fq__mp_kind {
  FQ__MP_NIL = 1,
  FQ__MP_BOOL,
  FQ__MP_UINT,
  FQ__MP_NINT,
  FQ__MP_FLOAT,
  FQ__MP_STR,
  FQ__MP_BIN,
  FQ__MP_ARRAY,
  FQ__MP_MAP,
  FQ__MP_EXT,
};

/* One object header.  For STR, BIN and EXT, p/len is the payload (borrowed
 * from the cursor's buffer); for ARRAY and MAP, count is the number of
 * elements / entries that follow (not read yet). */
typedef struct fq__mp_obj {
  int kind;
  union {
    bool b;
    uint64_t u;
    int64_t i;
    double f;
    uint32_t count;
  } v;
  const uint8_t *p;
  uint32_t len;
  int8_t ext_type;
} fq__mp_obj_t;

/* A cursor over [base, end); p is the next unread byte. */
typedef struct fq__mp_rd {
  const uint8_t *base, *p, *end;
} fq__mp_rd_t;

static inline void fq__mp_rd_init(fq__mp_rd_t *r, const uint8_t *buf, size_t len) {
  r->base = r->p = buf;
  r->end = buf + len;
}

/* A cursor over [at, at + len) that counts byte offsets in its messages
 * from `base`: a value inside a larger message (a request's `params`)
 * then reports positions counted from the start of that message, as
 * everything else does. */
static inline void fq__mp_rd_init_at(fq__mp_rd_t *r, const uint8_t *base, const uint8_t *at,
                                     size_t len) {
  r->base = base;
  r->p = at;
  r->end = at + len;
}

static inline size_t fq__mp_left(const fq__mp_rd_t *r) { return (size_t)(r->end - r->p); }

/* Read one object header (and, for STR/BIN/EXT, step over its payload).
 * Returns 0, or FQ_EBADREQ with err->msg saying what is wrong and at which
 * byte offset: truncated input, a declared string/binary length or
 * container count that the bytes left cannot hold, or the never-used byte
 * 0xc1.  On error the cursor position is unspecified. */
int fq__mp_next(fq__mp_rd_t *r, fq__mp_obj_t *o, fq_err_t *err);

/* Skip one whole object, including everything nested in it.  `depth` is
 * the nesting level the object itself sits at (the outermost object is at
 * 1); a container at a level above max_depth is refused.  Returns 0 or
 * FQ_EBADREQ (as fq__mp_next, plus "nesting deeper than ..."). */
int fq__mp_skip(fq__mp_rd_t *r, int depth, int max_depth, fq_err_t *err);

/* Like fq__mp_skip, but also requires what is inside to be representable
 * as JSON: nil, bool, integers, finite floats, valid UTF-8 strings, arrays
 * and maps with string keys (no binaries, no extensions).  `what` names
 * the value in messages ("params.tou_settings"). */
int fq__mp_skip_jsonish(fq__mp_rd_t *r, int depth, int max_depth, const char *what,
                        fq_err_t *err);

/* True when p[0..n) is well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
bool fq__utf8_valid(const uint8_t *p, size_t n);

/* Length (1 to 4) of the well-formed UTF-8 sequence p[0..n) starts with,
 * or 0 when it does not start with one (same rules as fq__utf8_valid).
 * n must be at least 1. */
size_t fq__utf8_seq_len(const uint8_t *p, size_t n);

/* Name of a kind for messages: "nil", "bool", "integer", "float",
 * "string", "binary", "array", "map", "extension". */
const char *fq__mp_kind_name(int kind);

/* Render untrusted bytes for an error message: printable ASCII as is, the
 * rest as \xNN, cut to at most 40 input bytes with "..." appended.  Always
 * NUL-terminates out (cap >= 8).  The result is pure ASCII, so it can go
 * into a msgpack string without breaking a strict UTF-8 decoder. */
void fq__mp_quote(const uint8_t *p, size_t n, char *out, size_t cap);

#endif
