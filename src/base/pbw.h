/*
 * pbw: a tiny protobuf writer over a caller's fixed array, for messages
 * packed by hand on hot paths (the signed RoutableMessage on the fleet side
 * in src/vcp, the car's replies in src/sim).  It knows the wire format only
 * (varints, keys, length-delimited and fixed32 fields), no schema, so it
 * belongs to base and any part may use it.
 *
 * Contract: the writer never writes past p[cap).  A write that does not fit
 * sets `bad` and every later write is ignored; callers size the array for
 * the worst case and check `bad` once at the end.  Header only (static
 * inline), no allocation, thread safe as long as one writer is used by one
 * thread.
 */
#ifndef FQ_PBW_H
#define FQ_PBW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Writes go to p[len..cap). */
typedef struct fq__pbw {
  uint8_t *p;
  size_t len, cap;
  bool bad;
} fq__pbw_t;

/* Bytes a varint of v takes (1..10). */
static inline size_t fq__varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static inline void fq__pb_raw(fq__pbw_t *w, const void *v, size_t n) {
  if (w->bad || n > w->cap - w->len) {
    w->bad = true;
    return;
  }
  if (n) memcpy(w->p + w->len, v, n);
  w->len += n;
}

static inline void fq__pb_varint(fq__pbw_t *w, uint64_t v) {
  uint8_t t[10];
  size_t n = 0;
  while (v >= 0x80) {
    t[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  t[n++] = (uint8_t)v;
  fq__pb_raw(w, t, n);
}

/* Field key: (field << 3) | wire type (0 varint, 2 bytes, 5 fixed32). */
static inline void fq__pb_key(fq__pbw_t *w, uint32_t field, unsigned wt) {
  fq__pb_varint(w, ((uint64_t)field << 3) | wt);
}

static inline void fq__pb_bytes(fq__pbw_t *w, uint32_t field, const void *v, size_t n) {
  fq__pb_key(w, field, 2);
  fq__pb_varint(w, n);
  fq__pb_raw(w, v, n);
}

/* Start a length-delimited field whose length is known in advance. */
static inline void fq__pb_submsg(fq__pbw_t *w, uint32_t field, size_t n) {
  fq__pb_key(w, field, 2);
  fq__pb_varint(w, n);
}

static inline void fq__pb_fixed32(fq__pbw_t *w, uint32_t field, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  fq__pb_key(w, field, 5);
  fq__pb_raw(w, b, 4);
}

static inline void fq__pb_uint(fq__pbw_t *w, uint32_t field, uint64_t v) {
  fq__pb_key(w, field, 0);
  fq__pb_varint(w, v);
}

#endif
