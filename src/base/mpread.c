/*
 * The bounded msgpack reader of mpread.h.  Every length and count is
 * checked against the bytes actually left before it is used, so hostile
 * input can make this code fail, never read out of bounds or make anyone
 * allocate.
 */
#include "mpread.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "byteorder.h"

static size_t off(const fq__mp_rd_t *r, const uint8_t *at) { return (size_t)(at - r->base); }

static int truncated(const fq__mp_rd_t *r, const uint8_t *at, fq_err_t *err) {
  return fq_errf(err, FQ_EBADREQ, "truncated msgpack: object at byte %zu runs past the end (%zu bytes)",
                 off(r, at), (size_t)(r->end - r->base));
}

/* Payload of `len` bytes follows the header that ended at r->p. */
static int take_payload(fq__mp_rd_t *r, const uint8_t *start, fq__mp_obj_t *o, uint32_t len,
                        fq_err_t *err) {
  if (len > fq__mp_left(r))
    return fq_errf(err, FQ_EBADREQ,
                   "%s at byte %zu declares %" PRIu32 " bytes but only %zu are left",
                   fq__mp_kind_name(o->kind), off(r, start), len, fq__mp_left(r));
  o->p = r->p;
  o->len = len;
  r->p += len;
  return 0;
}

/* A container declaring `count` elements, each at least `per` bytes. */
static int check_count(fq__mp_rd_t *r, const uint8_t *start, fq__mp_obj_t *o, uint32_t count,
                       size_t per, fq_err_t *err) {
  if ((uint64_t)count * per > fq__mp_left(r))
    return fq_errf(err, FQ_EBADREQ,
                   "%s at byte %zu declares %" PRIu32 " %s but only %zu bytes are left",
                   fq__mp_kind_name(o->kind), off(r, start), count,
                   o->kind == FQ__MP_MAP ? "entries" : "elements", fq__mp_left(r));
  o->v.count = count;
  return 0;
}

int fq__mp_next(fq__mp_rd_t *r, fq__mp_obj_t *o, fq_err_t *err) {
  const uint8_t *start = r->p;
  if (r->p >= r->end) return truncated(r, start, err);
  uint8_t b = *r->p++;
  o->p = NULL;
  o->len = 0;

  if (b <= 0x7f) {
    o->kind = FQ__MP_UINT;
    o->v.u = b;
    return 0;
  }
  if (b >= 0xe0) {
    o->kind = FQ__MP_NINT;
    o->v.i = (int8_t)b;
    return 0;
  }
  if ((b & 0xf0) == 0x80) {
    o->kind = FQ__MP_MAP;
    return check_count(r, start, o, b & 0x0f, 2, err);
  }
  if ((b & 0xf0) == 0x90) {
    o->kind = FQ__MP_ARRAY;
    return check_count(r, start, o, b & 0x0f, 1, err);
  }
  if ((b & 0xe0) == 0xa0) {
    o->kind = FQ__MP_STR;
    return take_payload(r, start, o, b & 0x1f, err);
  }

  /* Every remaining form has a fixed-size header extension; read it first. */
  static const uint8_t extra[0x20] = {
      [0x00] = 0, /* c0 nil */  [0x02] = 0, [0x03] = 0,  /* c2 false, c3 true */
      [0x04] = 1, [0x05] = 2, [0x06] = 4,                 /* bin 8/16/32 */
      [0x07] = 2, [0x08] = 3, [0x09] = 5,                 /* ext 8/16/32 */
      [0x0a] = 4, [0x0b] = 8,                             /* float 32/64 */
      [0x0c] = 1, [0x0d] = 2, [0x0e] = 4, [0x0f] = 8,     /* uint 8..64 */
      [0x10] = 1, [0x11] = 2, [0x12] = 4, [0x13] = 8,     /* int 8..64 */
      [0x14] = 2, [0x15] = 3, [0x16] = 5, [0x17] = 9, [0x18] = 17, /* fixext */
      [0x19] = 1, [0x1a] = 2, [0x1b] = 4,                 /* str 8/16/32 */
      [0x1c] = 2, [0x1d] = 4,                             /* array 16/32 */
      [0x1e] = 2, [0x1f] = 4,                             /* map 16/32 */
  };
  if (b == 0xc1)
    return fq_errf(err, FQ_EBADREQ, "invalid msgpack byte 0xc1 at byte %zu", off(r, start));
  size_t need = extra[b - 0xc0];
  if (need > fq__mp_left(r)) return truncated(r, start, err);
  const uint8_t *h = r->p;
  r->p += need;

  switch (b) {
  case 0xc0:
    o->kind = FQ__MP_NIL;
    return 0;
  case 0xc2:
  case 0xc3:
    o->kind = FQ__MP_BOOL;
    o->v.b = b == 0xc3;
    return 0;
  case 0xc4:
  case 0xc5:
  case 0xc6:
    o->kind = FQ__MP_BIN;
    return take_payload(r, start, o, b == 0xc4 ? h[0] : b == 0xc5 ? fq_get_be16(h) : fq_get_be32(h), err);
  case 0xc7:
  case 0xc8:
  case 0xc9: {
    o->kind = FQ__MP_EXT;
    uint32_t n = b == 0xc7 ? h[0] : b == 0xc8 ? fq_get_be16(h) : fq_get_be32(h);
    o->ext_type = (int8_t)h[need - 1];
    return take_payload(r, start, o, n, err);
  }
  case 0xca: {
    uint32_t bits = fq_get_be32(h);
    float f;
    memcpy(&f, &bits, sizeof f);
    o->kind = FQ__MP_FLOAT;
    o->v.f = f;
    return 0;
  }
  case 0xcb: {
    uint64_t bits = fq_get_be64(h);
    double d;
    memcpy(&d, &bits, sizeof d);
    o->kind = FQ__MP_FLOAT;
    o->v.f = d;
    return 0;
  }
  case 0xcc:
    o->kind = FQ__MP_UINT;
    o->v.u = h[0];
    return 0;
  case 0xcd:
    o->kind = FQ__MP_UINT;
    o->v.u = fq_get_be16(h);
    return 0;
  case 0xce:
    o->kind = FQ__MP_UINT;
    o->v.u = fq_get_be32(h);
    return 0;
  case 0xcf:
    o->kind = FQ__MP_UINT;
    o->v.u = fq_get_be64(h);
    return 0;
  case 0xd0:
  case 0xd1:
  case 0xd2:
  case 0xd3: {
    int64_t v = b == 0xd0   ? (int8_t)h[0]
                : b == 0xd1 ? (int16_t)fq_get_be16(h)
                : b == 0xd2 ? (int32_t)fq_get_be32(h)
                            : (int64_t)fq_get_be64(h);
    /* Some encoders use signed forms for small positive numbers; report
     * them as UINT so callers see one kind per sign. */
    if (v >= 0) {
      o->kind = FQ__MP_UINT;
      o->v.u = (uint64_t)v;
    } else {
      o->kind = FQ__MP_NINT;
      o->v.i = v;
    }
    return 0;
  }
  case 0xd4:
  case 0xd5:
  case 0xd6:
  case 0xd7:
  case 0xd8:
    o->kind = FQ__MP_EXT;
    o->ext_type = (int8_t)h[0];
    o->p = h + 1;
    o->len = (uint32_t)need - 1;
    return 0;
  case 0xd9:
  case 0xda:
  case 0xdb:
    o->kind = FQ__MP_STR;
    return take_payload(r, start, o, b == 0xd9 ? h[0] : b == 0xda ? fq_get_be16(h) : fq_get_be32(h), err);
  case 0xdc:
  case 0xdd:
    o->kind = FQ__MP_ARRAY;
    return check_count(r, start, o, b == 0xdc ? fq_get_be16(h) : fq_get_be32(h), 1, err);
  default: /* 0xde, 0xdf */
    o->kind = FQ__MP_MAP;
    return check_count(r, start, o, b == 0xde ? fq_get_be16(h) : fq_get_be32(h), 2, err);
  }
}

static int too_deep(const fq__mp_rd_t *r, const uint8_t *at, int max_depth, fq_err_t *err) {
  return fq_errf(err, FQ_EBADREQ, "nesting deeper than %d levels at byte %zu", max_depth,
                 off(r, at));
}

int fq__mp_skip(fq__mp_rd_t *r, int depth, int max_depth, fq_err_t *err) {
  const uint8_t *start = r->p;
  fq__mp_obj_t o;
  int rc = fq__mp_next(r, &o, err);
  if (rc) return rc;
  if (o.kind != FQ__MP_ARRAY && o.kind != FQ__MP_MAP) return 0;
  if (depth > max_depth) return too_deep(r, start, max_depth, err);
  /* check_count already proved count (x2 for maps) <= bytes left, so this
   * loop is bounded by the input size. */
  uint64_t n = o.kind == FQ__MP_MAP ? (uint64_t)o.v.count * 2 : o.v.count;
  for (uint64_t i = 0; i < n; i++) {
    rc = fq__mp_skip(r, depth + 1, max_depth, err);
    if (rc) return rc;
  }
  return 0;
}

int fq__mp_skip_jsonish(fq__mp_rd_t *r, int depth, int max_depth, const char *what,
                        fq_err_t *err) {
  const uint8_t *start = r->p;
  fq__mp_obj_t o;
  int rc = fq__mp_next(r, &o, err);
  if (rc) return rc;
  switch (o.kind) {
  case FQ__MP_NIL:
  case FQ__MP_BOOL:
  case FQ__MP_UINT:
  case FQ__MP_NINT:
    return 0;
  case FQ__MP_FLOAT:
    if (!isfinite(o.v.f))
      return fq_errf(err, FQ_EBADPARAM, "%s: non-finite float at byte %zu", what, off(r, start));
    return 0;
  case FQ__MP_STR:
    if (!fq__utf8_valid(o.p, o.len))
      return fq_errf(err, FQ_EBADPARAM, "%s: invalid UTF-8 in string at byte %zu", what,
                     off(r, start));
    return 0;
  case FQ__MP_BIN:
  case FQ__MP_EXT:
    return fq_errf(err, FQ_EBADPARAM, "%s: %s at byte %zu cannot be sent as JSON", what,
                   fq__mp_kind_name(o.kind), off(r, start));
  default:
    break;
  }
  if (depth > max_depth) return too_deep(r, start, max_depth, err);
  for (uint32_t i = 0; i < o.v.count; i++) {
    if (o.kind == FQ__MP_MAP) {
      const uint8_t *kat = r->p;
      fq__mp_obj_t k;
      rc = fq__mp_next(r, &k, err);
      if (rc) return rc;
      if (k.kind != FQ__MP_STR)
        return fq_errf(err, FQ_EBADPARAM, "%s: map key at byte %zu: keys must be strings (got %s)",
                       what, off(r, kat), fq__mp_kind_name(k.kind));
      if (!fq__utf8_valid(k.p, k.len))
        return fq_errf(err, FQ_EBADPARAM, "%s: invalid UTF-8 in map key at byte %zu", what,
                       off(r, kat));
    }
    rc = fq__mp_skip_jsonish(r, depth + 1, max_depth, what, err);
    if (rc) return rc;
  }
  return 0;
}

bool fq__utf8_valid(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    /* ASCII fast path, eight bytes at a time: nearly every string on the
     * wire (keys, VINs, tenant names) is plain ASCII. */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      if (w & UINT64_C(0x8080808080808080)) break;
      i += 8;
    }
    if (i >= n) break;
    size_t len = fq__utf8_seq_len(p + i, n - i);
    if (!len) return false;
    i += len;
  }
  return true;
}

size_t fq__utf8_seq_len(const uint8_t *p, size_t n) {
  uint8_t c = p[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0; /* continuation byte, overlong 2-byte lead, or > U+10FFFF lead */
  }
  if (n < len) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((p[k] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[k] & 0x3f);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0; /* overlong */
  if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

const char *fq__mp_kind_name(int kind) {
  switch (kind) {
  case FQ__MP_NIL: return "nil";
  case FQ__MP_BOOL: return "bool";
  case FQ__MP_UINT:
  case FQ__MP_NINT: return "integer";
  case FQ__MP_FLOAT: return "float";
  case FQ__MP_STR: return "string";
  case FQ__MP_BIN: return "binary";
  case FQ__MP_ARRAY: return "array";
  case FQ__MP_MAP: return "map";
  case FQ__MP_EXT: return "extension";
  default: return "?";
  }
}

void fq__mp_quote(const uint8_t *p, size_t n, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, i = 0;
  for (; i < n && i < 40; i++) {
    uint8_t c = p[i];
    bool plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
    /* Keep room for "..." and the NUL whatever happens next. */
    if (o + (plain ? 1 : 4) + 4 > cap) break;
    if (plain) {
      out[o++] = (char)c;
    } else {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  if (i < n) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
}
