/*
 * Write sets as log messages (writeset.h).  The encoder writes msgpack by
 * hand (a handful of types, always the same shapes) into fq_buf; the
 * decoder reads with the bounded cursor of mpread.h.
 */
#include "writeset.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "byteorder.h"
#include "mpread.h"

void fq_ws_init(fq_ws_t *w, size_t cap) {
  fq_buf_init(&w->ops, cap);
  w->nops = 0;
}

void fq_ws_reset(fq_ws_t *w) {
  fq_buf_reset(&w->ops);
  w->nops = 0;
}

void fq_ws_free(fq_ws_t *w) {
  fq_buf_free(&w->ops);
  w->nops = 0;
}

/* --- msgpack writers ---------------------------------------------------- */

static int w_uint(fq_buf_t *b, uint64_t v) {
  uint8_t t[9];
  size_t n;
  if (v < 128) {
    t[0] = (uint8_t)v;
    n = 1;
  } else if (v <= UINT8_MAX) {
    t[0] = 0xcc;
    t[1] = (uint8_t)v;
    n = 2;
  } else if (v <= UINT16_MAX) {
    t[0] = 0xcd;
    fq_put_be16(t + 1, (uint16_t)v);
    n = 3;
  } else if (v <= UINT32_MAX) {
    t[0] = 0xce;
    fq_put_be32(t + 1, (uint32_t)v);
    n = 5;
  } else {
    t[0] = 0xcf;
    fq_put_be64(t + 1, v);
    n = 9;
  }
  return fq_buf_append(b, t, n);
}

static int w_head(fq_buf_t *b, uint8_t b8, uint8_t b16, uint8_t b32, uint32_t len) {
  uint8_t t[5];
  size_t n;
  if (b8 && len <= UINT8_MAX) {
    t[0] = b8;
    t[1] = (uint8_t)len;
    n = 2;
  } else if (len <= UINT16_MAX) {
    t[0] = b16;
    fq_put_be16(t + 1, (uint16_t)len);
    n = 3;
  } else {
    t[0] = b32;
    fq_put_be32(t + 1, len);
    n = 5;
  }
  return fq_buf_append(b, t, n);
}

static int w_bin(fq_buf_t *b, const void *p, size_t n) {
  if (n > UINT32_MAX) return FQ_ETOOLARGE;
  int rc = w_head(b, 0xc4, 0xc5, 0xc6, (uint32_t)n);
  return rc ? rc : fq_buf_append(b, p, n);
}

static int w_str(fq_buf_t *b, const char *s) {
  size_t n = strlen(s);
  int rc;
  if (n < 32) {
    uint8_t t = (uint8_t)(0xa0 | n);
    rc = fq_buf_append(b, &t, 1);
  } else {
    rc = w_head(b, 0xd9, 0xda, 0xdb, (uint32_t)n);
  }
  return rc ? rc : fq_buf_append(b, s, n);
}

static int w_array(fq_buf_t *b, uint32_t n) {
  if (n < 16) {
    uint8_t t = (uint8_t)(0x90 | n);
    return fq_buf_append(b, &t, 1);
  }
  return w_head(b, 0, 0xdc, 0xdd, n);
}

static int add_op(fq_ws_t *w, unsigned db, int op, const void *key, size_t klen, const void *val,
                  size_t vlen) {
  if (db >= FQ_WS_DB_MAX) return FQ_EBADPARAM;
  if (w->nops == UINT32_MAX) return FQ_ETOOLARGE;
  fq_ws_mark_t m = fq_ws_mark(w);
  /* [db, op, key, val] */
  int rc = w_array(&w->ops, 4);
  if (!rc) rc = w_uint(&w->ops, db);
  if (!rc) rc = w_uint(&w->ops, (uint64_t)op);
  if (!rc) rc = w_bin(&w->ops, key, klen);
  if (!rc) {
    if (op == FQ_WS_PUT) {
      rc = w_bin(&w->ops, val, vlen);
    } else {
      uint8_t nil = 0xc0;
      rc = fq_buf_append(&w->ops, &nil, 1);
    }
  }
  if (rc) {
    fq_ws_rollback(w, m); /* no half operation left behind */
    return rc;
  }
  w->nops++;
  return 0;
}

int fq_ws_put(fq_ws_t *w, unsigned db, const void *key, size_t klen, const void *val,
              size_t vlen) {
  return add_op(w, db, FQ_WS_PUT, key, klen, val ? val : "", vlen);
}

int fq_ws_del(fq_ws_t *w, unsigned db, const void *key, size_t klen) {
  return add_op(w, db, FQ_WS_DEL, key, klen, NULL, 0);
}

fq_ws_mark_t fq_ws_mark(const fq_ws_t *w) { return (fq_ws_mark_t){w->ops.len, w->nops}; }

void fq_ws_rollback(fq_ws_t *w, fq_ws_mark_t m) {
  if (m.len <= w->ops.len) w->ops.len = m.len;
  if (m.nops <= w->nops) w->nops = m.nops;
}

int fq_ws_encode(const fq_ws_t *w, unsigned shard, uint64_t commit, const char *node,
                 fq_buf_t *out) {
  if (!node || !*node || strlen(node) > 32) return FQ_EBADPARAM;
  int rc = w_array(out, 5);
  if (!rc) rc = w_uint(out, FQ_WS_VERSION);
  if (!rc) rc = w_uint(out, shard);
  if (!rc) rc = w_uint(out, commit);
  if (!rc) rc = w_str(out, node);
  if (!rc) rc = w_array(out, w->nops);
  if (!rc && w->ops.len) rc = fq_buf_append(out, w->ops.data, w->ops.len);
  return rc;
}

/* --- decoding ------------------------------------------------------------- */

static int bad(fq_err_t *err, const fq__mp_rd_t *r, const char *what) {
  return fq_errf(err, FQ_EPROTO, "write set: %s at byte %zu", what, (size_t)(r->p - r->base));
}

static int want(fq__mp_rd_t *r, int kind, fq__mp_obj_t *o, const char *what, fq_err_t *err) {
  fq_err_t e2;
  if (fq__mp_next(r, o, &e2) != 0)
    return fq_errf(err, FQ_EPROTO, "write set: %s: %s", what, e2.msg);
  if (o->kind != kind) {
    char m[96];
    snprintf(m, sizeof m, "%s is %s, not %s", what, fq__mp_kind_name(o->kind),
             fq__mp_kind_name(kind));
    return bad(err, r, m);
  }
  return 0;
}

int fq_ws_decode(const uint8_t *p, size_t n, fq_ws_head_t *h, fq_ws_op_fn fn, void *ud,
                 fq_err_t *err) {
  memset(h, 0, sizeof *h);
  if (n == 0) {
    h->genesis = true;
    return 0;
  }
  fq__mp_rd_t r;
  fq__mp_rd_init(&r, p, n);
  fq__mp_obj_t o;
  int rc;
  if ((rc = want(&r, FQ__MP_ARRAY, &o, "message", err))) return rc;
  if (o.v.count != 5) return bad(err, &r, "message is not a 5-element array");
  if ((rc = want(&r, FQ__MP_UINT, &o, "version", err))) return rc;
  if (o.v.u != FQ_WS_VERSION) {
    char m[64];
    snprintf(m, sizeof m, "version %" PRIu64 " (this build reads %d)", o.v.u, FQ_WS_VERSION);
    return fq_errf(err, FQ_EPROTO, "write set: %s", m);
  }
  if ((rc = want(&r, FQ__MP_UINT, &o, "shard", err))) return rc;
  if (o.v.u > UINT32_MAX) return bad(err, &r, "shard out of range");
  h->shard = (unsigned)o.v.u;
  if ((rc = want(&r, FQ__MP_UINT, &o, "commit", err))) return rc;
  h->commit = o.v.u;
  if ((rc = want(&r, FQ__MP_STR, &o, "node", err))) return rc;
  if (o.len < 1 || o.len > 32) return bad(err, &r, "node id not 1..32 bytes");
  memcpy(h->node, o.p, o.len);
  h->node[o.len] = 0;
  if ((rc = want(&r, FQ__MP_ARRAY, &o, "operations", err))) return rc;
  h->nops = o.v.count;
  for (uint32_t i = 0; i < h->nops; i++) {
    if ((rc = want(&r, FQ__MP_ARRAY, &o, "operation", err))) return rc;
    if (o.v.count != 4) return bad(err, &r, "operation is not [db, op, key, val]");
    if ((rc = want(&r, FQ__MP_UINT, &o, "db", err))) return rc;
    if (o.v.u >= FQ_WS_DB_MAX) return bad(err, &r, "db index out of range");
    unsigned db = (unsigned)o.v.u;
    if ((rc = want(&r, FQ__MP_UINT, &o, "op", err))) return rc;
    if (o.v.u != FQ_WS_PUT && o.v.u != FQ_WS_DEL) return bad(err, &r, "op neither put nor del");
    int op = (int)o.v.u;
    if ((rc = want(&r, FQ__MP_BIN, &o, "key", err))) return rc;
    const uint8_t *key = o.p;
    size_t klen = o.len;
    if (klen == 0) return bad(err, &r, "empty key");
    const uint8_t *val = NULL;
    size_t vlen = 0;
    if (op == FQ_WS_PUT) {
      if ((rc = want(&r, FQ__MP_BIN, &o, "value of a put", err))) return rc;
      val = o.p;
      vlen = o.len;
    } else {
      if ((rc = want(&r, FQ__MP_NIL, &o, "value of a del", err))) return rc;
    }
    if (fn && (rc = fn(ud, db, op, key, klen, val, vlen)) != 0) return rc;
  }
  if (r.p != r.end) return bad(err, &r, "bytes after the message");
  return 0;
}
