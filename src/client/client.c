/*
 * The fleetq client library (include/fleetq/client.h): a DEALER request
 * socket, the request builders, a JSON printer over the base layer's
 * bounded msgpack reader (mpread.h), and the status-event subscriber.  The
 * daemon is the only peer, but replies still go through a bounds check
 * before msgpack-c sees them, because msgpack-c allocates whatever a
 * container header declares.  Both sockets can be CURVE clients (keys from
 * curvekey.h files) and watch their handshakes through a socket monitor,
 * so that a refused key is reported as such instead of as a timeout.
 */
#include "fleetq/client.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <zmq.h>

#include "curvekey.h"
#include "mpbuf.h"
#include "mpread.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Packing into an fq_buf_t                                             */

int fq_mpbuf_write(void *data, const char *buf, size_t len) {
  fq_mpbuf_t *pc = data;
  if (pc->rc) return -1;
  int rc = fq_buf_append(pc->out, buf, len);
  if (rc) {
    pc->rc = rc;
    return -1;
  }
  return 0;
}

void fq_mpbuf_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

void fq_mpbuf_raw(msgpack_packer *pk, const uint8_t *p, size_t n) {
  if (n) pk->callback(pk->data, (const char *)p, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  fq_mpbuf_str(pk, k);
  fq_mpbuf_str(pk, v);
}

static void pack_pval(msgpack_packer *pk, const fq_pval_t *pv) {
  msgpack_pack_str(pk, pv->name_len);
  msgpack_pack_str_body(pk, pv->name, pv->name_len);
  switch (pv->type) {
  case FQ_PT_BOOL:
    if (pv->v.b)
      msgpack_pack_true(pk);
    else
      msgpack_pack_false(pk);
    break;
  case FQ_PT_INT:
    msgpack_pack_int64(pk, pv->v.i);
    break;
  case FQ_PT_FLOAT:
    msgpack_pack_double(pk, pv->v.f);
    break;
  case FQ_PT_STR:
    msgpack_pack_str(pk, pv->v.s.n);
    msgpack_pack_str_body(pk, pv->v.s.p, pv->v.s.n);
    break;
  case FQ_PT_MAP:
    fq_mpbuf_raw(pk, pv->v.raw.p, pv->v.raw.n);
    break;
  default:
    msgpack_pack_nil(pk);
    break;
  }
}

static void pack_req(msgpack_packer *pk, bool has_req, int64_t req) {
  if (!has_req) return;
  fq_mpbuf_str(pk, "req");
  msgpack_pack_int64(pk, req);
}

int fq_req_submit(fq_buf_t *out, const fq_submit_args_t *a) {
  fq_mpbuf_t pc = {out, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
  size_t n = 6 + (a->nparams ? 1 : 0) + (a->ttl_ms ? 1 : 0) + (a->coalesce ? 1 : 0) +
             (a->no_wake ? 1 : 0) + (a->has_req ? 1 : 0) + (a->not_before ? 1 : 0);
  msgpack_pack_map(&pk, n);
  pack_kv_str(&pk, "op", "submit");
  pack_kv_str(&pk, "tenant", a->tenant ? a->tenant : "");
  pack_kv_str(&pk, "key", a->key ? a->key : "");
  pack_kv_str(&pk, "account", a->account ? a->account : "");
  if (a->vin) {
    pack_kv_str(&pk, "vin", a->vin);
  } else {
    fq_mpbuf_str(&pk, "site");
    msgpack_pack_uint64(&pk, a->site);
  }
  pack_kv_str(&pk, "command", a->command ? a->command : "");
  if (a->nparams) {
    fq_mpbuf_str(&pk, "params");
    msgpack_pack_map(&pk, a->nparams);
    for (size_t i = 0; i < a->nparams; i++) pack_pval(&pk, &a->params[i]);
  }
  if (a->ttl_ms) {
    fq_mpbuf_str(&pk, "ttl_ms");
    msgpack_pack_int64(&pk, a->ttl_ms);
  }
  if (a->coalesce) {
    fq_mpbuf_str(&pk, "coalesce");
    msgpack_pack_true(&pk);
  }
  if (a->no_wake) {
    fq_mpbuf_str(&pk, "wake");
    msgpack_pack_false(&pk);
  }
  if (a->not_before) {
    fq_mpbuf_str(&pk, "not_before");
    msgpack_pack_int64(&pk, a->not_before);
  }
  pack_req(&pk, a->has_req, a->req);
  return pc.rc;
}

int fq_req_lookup(fq_buf_t *out, const char *op, const char *id, const char *tenant,
                  const char *key, bool has_req, int64_t req) {
  fq_mpbuf_t pc = {out, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
  msgpack_pack_map(&pk, (id ? 2 : 3) + (has_req ? 1 : 0));
  pack_kv_str(&pk, "op", op);
  if (id) {
    pack_kv_str(&pk, "id", id);
  } else {
    pack_kv_str(&pk, "tenant", tenant ? tenant : "");
    pack_kv_str(&pk, "key", key ? key : "");
  }
  pack_req(&pk, has_req, req);
  return pc.rc;
}

int fq_req_history(fq_buf_t *out, uint32_t shard, uint64_t after, uint32_t limit, bool has_req,
                   int64_t req) {
  return fq_req_history_tenant(out, shard, NULL, after, limit, has_req, req);
}

int fq_req_history_tenant(fq_buf_t *out, uint32_t shard, const char *tenant, uint64_t after,
                          uint32_t limit, bool has_req, int64_t req) {
  fq_mpbuf_t pc = {out, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
  msgpack_pack_map(&pk, 4 + (tenant ? 1 : 0) + (has_req ? 1 : 0));
  pack_kv_str(&pk, "op", "history");
  fq_mpbuf_str(&pk, "shard");
  msgpack_pack_uint32(&pk, shard);
  if (tenant) pack_kv_str(&pk, "tenant", tenant);
  fq_mpbuf_str(&pk, "after");
  msgpack_pack_uint64(&pk, after);
  fq_mpbuf_str(&pk, "limit");
  msgpack_pack_uint32(&pk, limit);
  pack_req(&pk, has_req, req);
  return pc.rc;
}

int fq_req_ping(fq_buf_t *out, bool has_req, int64_t req) {
  fq_mpbuf_t pc = {out, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
  msgpack_pack_map(&pk, 1 + (has_req ? 1 : 0));
  pack_kv_str(&pk, "op", "ping");
  pack_req(&pk, has_req, req);
  return pc.rc;
}

/* ------------------------------------------------------------------ */
/* Parameters from the command line and from JSON                       */

/* Type a textual value the way a person typing on a shell means it. */
static void type_value(const char *v, size_t n, fq_pval_t *pv) {
  if (n == 4 && memcmp(v, "true", 4) == 0) {
    pv->type = FQ_PT_BOOL;
    pv->v.b = true;
    return;
  }
  if (n == 5 && memcmp(v, "false", 5) == 0) {
    pv->type = FQ_PT_BOOL;
    pv->v.b = false;
    return;
  }
  /* Only plain decimal notation counts as a number: strtod would also take
   * "nan", "inf" and hex, which a user means as text. */
  bool numeric = n > 0 && n < 64;
  bool digit = false, frac = false;
  for (size_t i = 0; numeric && i < n; i++) {
    char ch = v[i];
    if (ch >= '0' && ch <= '9')
      digit = true;
    else if ((ch == '-' || ch == '+') && (i == 0 || v[i - 1] == 'e' || v[i - 1] == 'E'))
      ;
    else if (ch == '.' || ch == 'e' || ch == 'E')
      frac = true;
    else
      numeric = false;
  }
  if (numeric && digit) {
    char tmp[64];
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    char *end = NULL;
    errno = 0;
    if (!frac) {
      long long i = strtoll(tmp, &end, 10);
      if (errno == 0 && end && *end == '\0') {
        pv->type = FQ_PT_INT;
        pv->v.i = i;
        return;
      }
    } else {
      double d = strtod(tmp, &end);
      if (errno == 0 && end && *end == '\0' && isfinite(d)) {
        pv->type = FQ_PT_FLOAT;
        pv->v.f = d;
        return;
      }
    }
  }
  pv->type = FQ_PT_STR;
  pv->v.s.p = v;
  pv->v.s.n = n;
}

int fq_param_parse(const char *arg, fq_pval_t *pv, fq_err_t *err) {
  memset(pv, 0, sizeof *pv);
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg)
    return fq_errf(err, FQ_EBADPARAM, "--param %s: expected name=value", arg);
  pv->name = arg;
  pv->name_len = (size_t)(eq - arg);
  type_value(eq + 1, strlen(eq + 1), pv);
  return 0;
}

/* JSON -> msgpack for nested parameter values. */
static int json_to_mp(msgpack_packer *pk, json_t *j, int depth, fq_err_t *err) {
  if (depth > FQ_CLIENT_MAX_DEPTH)
    return fq_errf(err, FQ_EBADPARAM, "--params: nested deeper than %d", FQ_CLIENT_MAX_DEPTH);
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    const char *k;
    json_t *v;
    msgpack_pack_map(pk, json_object_size(j));
    json_object_foreach(j, k, v) {
      fq_mpbuf_str(pk, k);
      int rc = json_to_mp(pk, v, depth + 1, err);
      if (rc) return rc;
    }
    return 0;
  }
  case JSON_ARRAY: {
    size_t i;
    json_t *v;
    msgpack_pack_array(pk, json_array_size(j));
    json_array_foreach(j, i, v) {
      int rc = json_to_mp(pk, v, depth + 1, err);
      if (rc) return rc;
    }
    return 0;
  }
  case JSON_STRING:
    msgpack_pack_str(pk, json_string_length(j));
    msgpack_pack_str_body(pk, json_string_value(j), json_string_length(j));
    return 0;
  case JSON_INTEGER:
    msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
    return 0;
  case JSON_REAL:
    msgpack_pack_double(pk, json_real_value(j));
    return 0;
  case JSON_TRUE:
    msgpack_pack_true(pk);
    return 0;
  case JSON_FALSE:
    msgpack_pack_false(pk);
    return 0;
  default:
    msgpack_pack_nil(pk);
    return 0;
  }
}

/* Where one parameter's bytes sit in the store, fixed up into pointers
 * only once the store can no longer move. */
typedef struct param_off {
  size_t name, name_len, val, val_len;
} param_off_t;

int fq_params_from_json(const char *json, fq_buf_t *store, fq_pval_t *out, size_t cap,
                        size_t *n, fq_err_t *err) {
  int rc = 0;
  json_error_t jerr;
  param_off_t offs[FQ_MAX_PARAMS];
  json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
  *n = 0;
  if (!root) return fq_errf(err, FQ_EBADPARAM, "--params: %s (column %d)", jerr.text, jerr.column);
  if (!json_is_object(root)) {
    rc = fq_errf(err, FQ_EBADPARAM, "--params: expected a JSON object");
    goto out;
  }
  const char *k;
  json_t *v;
  size_t i = 0;
  json_object_foreach(root, k, v) {
    if (i >= cap || i >= FQ_MAX_PARAMS) {
      rc = fq_errf(err, FQ_EBADPARAM, "--params: more than %zu parameters", cap);
      goto out;
    }
    fq_pval_t *pv = &out[i];
    param_off_t *po = &offs[i];
    memset(pv, 0, sizeof *pv);
    po->name = store->len;
    po->name_len = strlen(k);
    if ((rc = fq_buf_append(store, k, po->name_len)) != 0) goto toolarge;
    po->val = store->len;
    switch (json_typeof(v)) {
    case JSON_TRUE:
    case JSON_FALSE:
      pv->type = FQ_PT_BOOL;
      pv->v.b = json_is_true(v);
      break;
    case JSON_INTEGER:
      pv->type = FQ_PT_INT;
      pv->v.i = (int64_t)json_integer_value(v);
      break;
    case JSON_REAL:
      pv->type = FQ_PT_FLOAT;
      pv->v.f = json_real_value(v);
      break;
    case JSON_STRING:
      pv->type = FQ_PT_STR;
      if ((rc = fq_buf_append(store, json_string_value(v), json_string_length(v))) != 0)
        goto toolarge;
      break;
    case JSON_OBJECT:
    case JSON_ARRAY: {
      fq_mpbuf_t pc = {store, 0};
      msgpack_packer pk;
      msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
      pv->type = FQ_PT_MAP;
      if ((rc = json_to_mp(&pk, v, 1, err)) != 0) goto out;
      if ((rc = pc.rc) != 0) goto toolarge;
      break;
    }
    default:
      rc = fq_errf(err, FQ_EBADPARAM, "params.%s: null is not a parameter value", k);
      goto out;
    }
    po->val_len = store->len - po->val;
    i++;
  }
  for (size_t j = 0; j < i; j++) {
    out[j].name = (const char *)store->data + offs[j].name;
    out[j].name_len = offs[j].name_len;
    if (out[j].type == FQ_PT_STR) {
      out[j].v.s.p = (const char *)store->data + offs[j].val;
      out[j].v.s.n = offs[j].val_len;
    } else if (out[j].type == FQ_PT_MAP) {
      out[j].v.raw.p = store->data + offs[j].val;
      out[j].v.raw.n = offs[j].val_len;
    }
  }
  *n = i;
  goto out;
toolarge:
  rc = fq_errf(err, FQ_EBADPARAM, "--params: too large");
out:
  json_decref(root);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Checking untrusted msgpack (the base layer's bounded reader)          */

int fq_msgpack_check(const uint8_t *buf, size_t len, fq_err_t *err) {
  if (!buf || !len) return fq_errf(err, FQ_EBADREQ, "malformed msgpack (no bytes)");
  fq__mp_rd_t r;
  fq__mp_rd_init(&r, buf, len);
  int rc = fq__mp_skip(&r, 1, FQ_CLIENT_MAX_DEPTH, err);
  if (rc) return rc;
  if (fq__mp_left(&r))
    return fq_errf(err, FQ_EBADREQ, "trailing bytes after msgpack value (%zu of %zu used)",
                   len - fq__mp_left(&r), len);
  return 0;
}

/* ------------------------------------------------------------------ */
/* msgpack -> JSON                                                      */

static int json_str(fq_buf_t *out, const uint8_t *p, size_t n) {
  int rc = fq_buf_append(out, "\"", 1);
  size_t i = 0;
  while (!rc && i < n) {
    uint8_t c = p[i];
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      rc = fq_buf_append(out, esc, 2);
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      rc = fq_buf_printf(out, "\\u%04x", c);
      i++;
    } else {
      size_t u = fq__utf8_seq_len(p + i, n - i);
      if (u == 0) {
        /* Invalid UTF-8 would make the whole line unreadable to a JSON
         * parser; mark the byte instead. */
        rc = fq_buf_append_str(out, "\\ufffd");
        i++;
      } else {
        rc = fq_buf_append(out, p + i, u);
        i += u;
      }
    }
  }
  if (!rc) rc = fq_buf_append(out, "\"", 1);
  return rc;
}

static int json_hex(fq_buf_t *out, const uint8_t *p, size_t n) {
  static const char hx[] = "0123456789abcdef";
  int rc = fq_buf_reserve(out, 2 * n + 2);
  if (rc) return rc;
  out->data[out->len++] = '"';
  for (size_t i = 0; i < n; i++) {
    out->data[out->len++] = (uint8_t)hx[p[i] >> 4];
    out->data[out->len++] = (uint8_t)hx[p[i] & 15];
  }
  out->data[out->len++] = '"';
  return 0;
}

static int json_nl(fq_buf_t *out, int pretty, int indent) {
  if (!pretty) return 0;
  int rc = fq_buf_append(out, "\n", 1);
  for (int i = 0; !rc && i < indent; i++) rc = fq_buf_append(out, "  ", 2);
  return rc;
}

static int mp_json(fq__mp_rd_t *r, int depth, fq_buf_t *out, int pretty);

static int json_container(fq__mp_rd_t *r, int depth, fq_buf_t *out, int pretty,
                          const fq__mp_obj_t *o) {
  bool map = o->kind == FQ__MP_MAP;
  int rc = fq_buf_append(out, map ? "{" : "[", 1);
  for (uint32_t i = 0; !rc && i < o->v.count; i++) {
    if (i) rc = fq_buf_append(out, ",", 1);
    if (!rc) rc = json_nl(out, pretty, depth);
    if (rc) break;
    if (map) {
      fq__mp_rd_t save = *r;
      fq__mp_obj_t k;
      if (fq__mp_next(&save, &k, NULL)) return FQ_EBADREQ;
      if (k.kind == FQ__MP_STR) {
        *r = save;
        rc = json_str(out, k.p, k.len);
      } else {
        /* JSON keys are strings: render the key as JSON, then quote it. */
        fq_buf_t tmp;
        fq_buf_init(&tmp, out->cap);
        rc = mp_json(r, depth + 1, &tmp, 0);
        if (!rc) rc = json_str(out, tmp.data, tmp.len);
        fq_buf_free(&tmp);
      }
      if (!rc) rc = fq_buf_append_str(out, pretty ? ": " : ":");
    }
    if (!rc) rc = mp_json(r, depth + 1, out, pretty);
  }
  if (!rc && o->v.count) rc = json_nl(out, pretty, depth - 1);
  if (!rc) rc = fq_buf_append(out, map ? "}" : "]", 1);
  return rc;
}

static int mp_json(fq__mp_rd_t *r, int depth, fq_buf_t *out, int pretty) {
  fq__mp_obj_t o;
  if (fq__mp_next(r, &o, NULL)) return FQ_EBADREQ;
  switch (o.kind) {
  case FQ__MP_NIL: return fq_buf_append_str(out, "null");
  case FQ__MP_BOOL: return fq_buf_append_str(out, o.v.b ? "true" : "false");
  case FQ__MP_UINT: return fq_buf_printf(out, "%" PRIu64, o.v.u);
  case FQ__MP_NINT: return fq_buf_printf(out, "%" PRId64, o.v.i);
  case FQ__MP_FLOAT: {
    if (!isfinite(o.v.f)) return fq_buf_append_str(out, "null");
    char num[40];
    snprintf(num, sizeof num, "%.17g", o.v.f);
    /* Keep a float looking like one, so a reader sees the type sent. */
    if (!strpbrk(num, ".eE")) strncat(num, ".0", sizeof num - strlen(num) - 1);
    return fq_buf_append_str(out, num);
  }
  case FQ__MP_STR: return json_str(out, o.p, o.len);
  case FQ__MP_BIN:
  case FQ__MP_EXT: return json_hex(out, o.p, o.len);
  default:
    /* The same bound as fq_msgpack_check: containers nest at most
     * FQ_CLIENT_MAX_DEPTH deep, which also bounds this recursion. */
    if (depth > FQ_CLIENT_MAX_DEPTH) return FQ_EBADREQ;
    return json_container(r, depth, out, pretty, &o);
  }
}

int fq_msgpack_to_json(const uint8_t *buf, size_t len, fq_buf_t *out, int pretty) {
  if (!buf || !len) return FQ_EBADREQ;
  fq__mp_rd_t r;
  fq__mp_rd_init(&r, buf, len);
  size_t start = out->len;
  int rc = mp_json(&r, 1, out, pretty);
  if (!rc && fq__mp_left(&r)) rc = FQ_EBADREQ;
  if (rc) out->len = start;
  return rc;
}

/* ------------------------------------------------------------------ */
/* Decoded replies                                                      */

int fq_msg_decode(fq_msg_t *m, const uint8_t *buf, size_t len, fq_err_t *err) {
  memset(m, 0, sizeof *m);
  msgpack_unpacked_init(&m->up);
  int rc = fq_msgpack_check(buf, len, err);
  if (rc) goto fail;
  size_t off = 0;
  msgpack_unpack_return ur = msgpack_unpack_next(&m->up, (const char *)buf, len, &off);
  if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
    rc = fq_errf(err, FQ_EBADREQ, "cannot unpack message (%d)", (int)ur);
    goto fail;
  }
  if (m->up.data.type != MSGPACK_OBJECT_MAP) {
    rc = fq_errf(err, FQ_EBADREQ, "message is not a map");
    goto fail;
  }
  m->root = &m->up.data;
  return 0;
fail:
  msgpack_unpacked_destroy(&m->up);
  memset(m, 0, sizeof *m);
  return rc;
}

void fq_msg_free(fq_msg_t *m) {
  if (m->root) msgpack_unpacked_destroy(&m->up);
  memset(m, 0, sizeof *m);
}

const msgpack_object *fq_mp_get(const msgpack_object *o, const char *key) {
  if (!o || o->type != MSGPACK_OBJECT_MAP) return NULL;
  size_t kl = strlen(key);
  for (uint32_t i = 0; i < o->via.map.size; i++) {
    const msgpack_object *k = &o->via.map.ptr[i].key;
    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
        memcmp(k->via.str.ptr, key, kl) == 0)
      return &o->via.map.ptr[i].val;
  }
  return NULL;
}

bool fq_mp_str(const msgpack_object *o, const char **p, size_t *n) {
  if (!o || o->type != MSGPACK_OBJECT_STR) return false;
  *p = o->via.str.ptr;
  *n = o->via.str.size;
  return true;
}

bool fq_mp_int(const msgpack_object *o, int64_t *v) {
  if (!o) return false;
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    if (o->via.u64 > INT64_MAX) return false;
    *v = (int64_t)o->via.u64;
    return true;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    *v = o->via.i64;
    return true;
  }
  return false;
}

bool fq_mp_bool(const msgpack_object *o, bool *v) {
  if (!o || o->type != MSGPACK_OBJECT_BOOLEAN) return false;
  *v = o->via.boolean;
  return true;
}

bool fq_mp_str_eq(const msgpack_object *o, const char *s) {
  const char *p;
  size_t n;
  return fq_mp_str(o, &p, &n) && n == strlen(s) && memcmp(p, s, n) == 0;
}

/* ------------------------------------------------------------------ */
/* CURVE credentials                                                    */

static int zmq_fail(fq_err_t *err, const char *what) {
  return fq_errf(err, FQ_EINTERNAL, "%s: %s", what, zmq_strerror(zmq_errno()));
}

void fq_client_opts_from_env(fq_client_opts_t *o) {
  const char *k = getenv(FQ_ENV_CURVE_KEY), *s = getenv(FQ_ENV_SERVER_KEY);
  if (!o->curve_key_file && k && *k) o->curve_key_file = k;
  if (!o->server_key && s && *s) o->server_key = s;
}

int fq_client_opts_resolve(fq_client_opts_t *o, fq_err_t *err) {
  const char *key_flag = o->curve_key_file, *server_flag = o->server_key;
  fq_client_opts_from_env(o);
  const char *key_from = key_flag ? "--curve-key" : FQ_ENV_CURVE_KEY;
  const char *server_from = server_flag ? "--server-key" : FQ_ENV_SERVER_KEY;
  bool has_key = o->curve_key_file && *o->curve_key_file;
  bool has_server = o->server_key && *o->server_key;
  if (has_key && !has_server)
    return fq_errf(err, FQ_ECONFIG,
                   "%s is set but not --server-key (or " FQ_ENV_SERVER_KEY "): CURVE needs "
                   "both, or neither for a plaintext fleetqd",
                   key_from);
  if (has_server && !has_key)
    return fq_errf(err, FQ_ECONFIG,
                   "%s is set but not --curve-key (or " FQ_ENV_CURVE_KEY "): CURVE needs "
                   "both, or neither for a plaintext fleetqd",
                   server_from);
  if (has_server && !fq_curve_key_valid(o->server_key))
    return fq_errf(err, FQ_ECONFIG,
                   "%s: not a CURVE public key (%zu characters; expected the 40 Z85 characters "
                   "'fleetq curve-keygen' printed for fleetqd's key)",
                   server_from, strlen(o->server_key));
  fq_curve_creds_t cc;
  int rc = fq_curve_creds_load(&cc, o, err);
  fq_curve_creds_wipe(&cc);
  if (rc && err) {
    /* The key file's own message names the file; say which setting gave it. */
    char msg[FQ_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", err->msg);
    fq_errf(err, rc, "%s: %s", key_from, msg);
  }
  return rc;
}

void fq_curve_creds_wipe(fq_curve_creds_t *cc) { OPENSSL_cleanse(cc, sizeof *cc); }

int fq_curve_creds_load(fq_curve_creds_t *cc, const fq_client_opts_t *o, fq_err_t *err) {
  memset(cc, 0, sizeof *cc);
  bool has_key = o->curve_key_file && *o->curve_key_file;
  bool has_server = o->server_key && *o->server_key;
  if (!has_key && !has_server) return 0;
  /* Half a CURVE setup would silently fall back to plaintext, or fail
   * every handshake with nothing to say why: refuse it here. */
  if (!has_server)
    return fq_errf(err, FQ_ECONFIG,
                   "a client key file was given but not the server's public key: CURVE needs "
                   "both (or neither, for a plaintext daemon)");
  if (!has_key)
    return fq_errf(err, FQ_ECONFIG,
                   "the server's public key was given but not a client key file: CURVE needs "
                   "both (or neither, for a plaintext daemon)");
  if (!fq_curve_key_valid(o->server_key))
    return fq_errf(err, FQ_ECONFIG,
                   "the server key is not a CURVE public key (%zu characters; expected the 40 "
                   "Z85 characters that 'fleetq curve-keygen' printed for fleetqd)",
                   strlen(o->server_key));
  int rc = fq_curve_keyfile_load(o->curve_key_file, cc->pub, cc->sec, err);
  if (rc) {
    fq_curve_creds_wipe(cc);
    return rc;
  }
  memcpy(cc->server, o->server_key, FQ_CURVE_KEY_LEN + 1);
  cc->on = true;
  return 0;
}

int fq_curve_creds_apply(const fq_curve_creds_t *cc, void *zsock, fq_err_t *err) {
  if (!cc->on) return 0;
  if (zmq_setsockopt(zsock, ZMQ_CURVE_SERVERKEY, cc->server, FQ_CURVE_KEY_LEN + 1) ||
      zmq_setsockopt(zsock, ZMQ_CURVE_PUBLICKEY, cc->pub, FQ_CURVE_KEY_LEN + 1) ||
      zmq_setsockopt(zsock, ZMQ_CURVE_SECRETKEY, cc->sec, FQ_CURVE_KEY_LEN + 1))
    return zmq_fail(err, "CURVE socket options");
  return 0;
}

/* ------------------------------------------------------------------ */
/* Handshake monitor                                                    */

/* The events a socket monitor reports to the client and subscriber. */
#define HS_EVENTS                                                                    \
  (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |            \
   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

/* With CURVE, a server that cannot open the client's HELLO (the client
 * used the wrong server key) just closes the connection: the client sees
 * "failed, no detail".  That also happens once when a daemon goes away
 * mid-handshake, so only this many in a row, with no success between, are
 * taken as a refusal. */
#define HS_NO_DETAIL_LIMIT 2

typedef struct hs_watch {
  void *mon;     /* PAIR connected to the socket's monitor, or NULL */
  bool curve;    /* the socket is a CURVE client */
  int no_detail; /* "no detail" failures since the last success */
  bool ok;       /* a handshake succeeded (and none failed since) */
} hs_watch_t;

static atomic_uint g_mon_seq; /* only makes monitor endpoint names unique */

/* Attach a monitor for the handshake events to sock; must precede connect
 * so that no event is missed. */
static int hs_attach(hs_watch_t *w, void *ctx, void *sock, const char *what, fq_err_t *err) {
  char ep[96];
  int linger = 0;
  /* A reconnecting client monitors a new socket on the same context: the
   * name must differ from the old monitor's, which is unbound only once
   * ZeroMQ has finished closing it. */
  snprintf(ep, sizeof ep, "inproc://fq-%s-monitor-%p-%u", what, sock,
           atomic_fetch_add(&g_mon_seq, 1) + 1);
  if (zmq_socket_monitor(sock, ep, HS_EVENTS)) return zmq_fail(err, "zmq_socket_monitor");
  w->mon = zmq_socket(ctx, ZMQ_PAIR);
  if (!w->mon || zmq_setsockopt(w->mon, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_connect(w->mon, ep))
    return zmq_fail(err, "monitor socket");
  w->no_detail = 0;
  w->ok = false;
  return 0;
}

/* Stop monitoring sock and close the PAIR; w->mon becomes NULL. */
static void hs_detach(hs_watch_t *w, void *sock) {
  if (sock) zmq_socket_monitor(sock, NULL, 0);
  if (w->mon) zmq_close(w->mon);
  w->mon = NULL;
}

/* Read one monitor event (two frames: 6 bytes of event id and value,
 * then the endpoint).  Returns 0 or -1 (nothing readable). */
static int hs_read(void *mon, uint16_t *ev, uint32_t *val) {
  bool more = true;
  int frame = 0;
  *ev = 0;
  *val = 0;
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, mon, frame ? 0 : ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      return -1;
    }
    if (frame == 0 && zmq_msg_size(&m) >= 6) {
      const uint8_t *d = zmq_msg_data(&m);
      memcpy(ev, d, 2);
      memcpy(val, d + 2, 4);
    }
    more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    frame++;
  }
  return 0;
}

/* Take one handshake event into w.  Returns 0, or FQ_EAUTH with the
 * reason when it amounts to a refusal. */
static int hs_judge(hs_watch_t *w, uint16_t ev, uint32_t val, const char *peer, const char *ep,
                    fq_err_t *err) {
  switch (ev) {
  case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
    w->ok = true;
    w->no_detail = 0;
    return 0;
  case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
    w->ok = false;
    return fq_errf(err, FQ_EAUTH,
                   "%s %s refused this client's %s (ZAP status %u): the key is not in fleetqd's "
                   "clients file, or was removed",
                   peer, ep, w->curve ? "CURVE key" : "connection", (unsigned)val);
  case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    w->ok = false;
    if (val == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
      return w->curve ? fq_errf(err, FQ_EAUTH,
                                "%s %s does not use CURVE (security mechanisms differ): drop the "
                                "client and server keys for a plaintext fleetqd",
                                peer, ep)
                      : fq_errf(err, FQ_EAUTH,
                                "%s %s requires CURVE authentication: give a client key file and "
                                "the server's public key (--curve-key FILE --server-key Z85, or "
                                FQ_ENV_CURVE_KEY " and " FQ_ENV_SERVER_KEY ")",
                                peer, ep);
    if (val == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
      return fq_errf(err, FQ_EAUTH,
                     "CURVE handshake with %s %s failed (cryptographic error): is the server "
                     "key the public key of fleetqd's --curve-secret file?",
                     peer, ep);
    return fq_errf(err, FQ_EAUTH, "handshake with %s %s failed: ZMTP protocol error 0x%x", peer,
                   ep, (unsigned)val);
  case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    /* A mechanism mismatch can look like this too: the side that notices
     * first closes at once, and its reset may discard the greeting that
     * would have told this side. */
    w->ok = false;
    if (++w->no_detail < HS_NO_DETAIL_LIMIT) return 0;
    return w->curve ? fq_errf(err, FQ_EAUTH,
                              "%s %s refused the CURVE handshake (it closed the connection %d "
                              "times): the server key is not the public key of fleetqd's "
                              "--curve-secret file, the server refused this client's key, or it "
                              "does not use CURVE",
                              peer, ep, w->no_detail)
                    : fq_errf(err, FQ_EAUTH,
                              "%s %s closed the connection during the handshake %d times: it "
                              "probably requires CURVE authentication (give a client key file "
                              "and the server's public key: --curve-key FILE --server-key Z85, "
                              "or " FQ_ENV_CURVE_KEY " and " FQ_ENV_SERVER_KEY ")",
                              peer, ep, w->no_detail);
  default: return 0;
  }
}

/* Read and judge every pending event.  Returns 0 or FQ_EAUTH. */
static int hs_drain(hs_watch_t *w, const char *peer, const char *ep, fq_err_t *err) {
  uint16_t ev;
  uint32_t val;
  int rc = 0;
  while (w->mon && hs_read(w->mon, &ev, &val) == 0) {
    int r = hs_judge(w, ev, val, peer, ep, err);
    if (r && !rc) rc = r;
  }
  return rc;
}

/* Milliseconds left until deadline (monotonic ns), never negative. */
static long ms_left(int64_t deadline) {
  int64_t d = deadline - fq_mono_ns();
  return d <= 0 ? 0 : (long)((d + 999999) / 1000000);
}

/* ------------------------------------------------------------------ */
/* Request socket                                                       */

struct fq_client {
  void *ctx;
  void *sock;
  char *endpoint;
  int timeout_ms;
  fq_curve_creds_t curve; /* applied to every socket opened */
  hs_watch_t hs;
};

static void client_close(fq_client_t *c) {
  hs_detach(&c->hs, c->sock);
  if (c->sock) zmq_close(c->sock);
  c->sock = NULL;
}

static int client_open(fq_client_t *c, fq_err_t *err) {
  int linger = 0;
  /* Benchmarks pipeline thousands of requests; ZeroMQ's default high-water
   * mark of 1000 would make sends block long before the daemon pushes back. */
  int hwm = 100000;
  int64_t maxmsg = FQ_CLIENT_MAX_REPLY;
  int rc;
  c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
  if (!c->sock) return zmq_fail(err, "zmq_socket");
  if (zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
      zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
      zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
      zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof c->timeout_ms))
    return zmq_fail(err, "zmq_setsockopt");
  if ((rc = fq_curve_creds_apply(&c->curve, c->sock, err))) return rc;
  c->hs.curve = c->curve.on;
  if ((rc = hs_attach(&c->hs, c->ctx, c->sock, "client", err))) return rc;
  if (zmq_connect(c->sock, c->endpoint))
    return fq_errf(err, FQ_EINTERNAL, "connect %s: %s", c->endpoint, zmq_strerror(zmq_errno()));
  return 0;
}

fq_client_t *fq_client_new_opts(const fq_client_opts_t *o, fq_err_t *err) {
  fq_client_t *c = calloc(1, sizeof *c);
  if (!c) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
  if (fq_curve_creds_load(&c->curve, o, err)) goto fail;
  c->endpoint = strdup(o->endpoint ? o->endpoint : "");
  c->ctx = zmq_ctx_new();
  if (!c->endpoint || !c->ctx) {
    fq_errf(err, c->endpoint ? FQ_EINTERNAL : -ENOMEM, "cannot create ZeroMQ context");
    goto fail;
  }
  if (client_open(c, err)) goto fail;
  return c;
fail:
  fq_client_destroy(&c);
  return NULL;
}

fq_client_t *fq_client_new(const char *endpoint, int timeout_ms, fq_err_t *err) {
  fq_client_opts_t o = {.endpoint = endpoint, .timeout_ms = timeout_ms};
  return fq_client_new_opts(&o, err);
}

void fq_client_destroy(fq_client_t **cp) {
  if (!cp || !*cp) return;
  fq_client_t *c = *cp;
  client_close(c);
  if (c->ctx) zmq_ctx_term(c->ctx);
  fq_curve_creds_wipe(&c->curve);
  free(c->endpoint);
  free(c);
  *cp = NULL;
}

int fq_client_send(fq_client_t *c, const uint8_t *body, size_t len, fq_err_t *err) {
  if (zmq_send(c->sock, body, len, 0) < 0) {
    int e = zmq_errno();
    if (e == EAGAIN) return fq_errf(err, -EAGAIN, "send queue to %s is full", c->endpoint);
    if (e == EINTR) return fq_errf(err, -EINTR, "interrupted");
    return zmq_fail(err, "zmq_send");
  }
  return 0;
}

/* Wait until the socket has a reply, the handshake is refused or the
 * deadline passes.  Returns 0 (readable), -ETIMEDOUT, -EINTR, FQ_EAUTH or
 * FQ_EINTERNAL. */
static int client_wait(fq_client_t *c, int timeout_ms, fq_err_t *err) {
  int64_t deadline = fq_mono_ns() + (int64_t)timeout_ms * 1000000;
  for (;;) {
    zmq_pollitem_t pi[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->hs.mon, 0, ZMQ_POLLIN, 0}};
    int n = zmq_poll(pi, c->hs.mon ? 2 : 1, ms_left(deadline));
    if (n < 0) {
      if (zmq_errno() == EINTR) return fq_errf(err, -EINTR, "interrupted");
      return zmq_fail(err, "zmq_poll");
    }
    if (pi[0].revents & ZMQ_POLLIN) return 0;
    if (n > 0 && (pi[1].revents & ZMQ_POLLIN)) {
      int rc = hs_drain(&c->hs, "fleetqd", c->endpoint, err);
      if (rc) return rc;
      continue;
    }
    if (ms_left(deadline) == 0)
      return fq_errf(err, -ETIMEDOUT, "no reply from %s within %d ms", c->endpoint, timeout_ms);
  }
}

int fq_client_recv(fq_client_t *c, fq_buf_t *reply, int timeout_ms, fq_err_t *err) {
  int rc;
  bool more = true, toolarge = false;
  if (timeout_ms < 0) timeout_ms = c->timeout_ms;
  if ((rc = client_wait(c, timeout_ms, err))) return rc;
  fq_buf_reset(reply);
  /* Keep only the last frame: that is the body; frames before it are an
   * envelope (none on a DEALER unless the peer added some). */
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, c->sock, 0) < 0) {
      zmq_msg_close(&m);
      return zmq_fail(err, "zmq_msg_recv");
    }
    more = zmq_msg_more(&m);
    fq_buf_reset(reply);
    /* Only the last frame's size matters: it is the one kept. */
    rc = fq_buf_append(reply, zmq_msg_data(&m), zmq_msg_size(&m));
    toolarge = rc != 0;
    zmq_msg_close(&m);
  }
  if (toolarge) return fq_errf(err, FQ_ETOOLARGE, "reply larger than %zu bytes", reply->cap);
  return 0;
}

int fq_client_request(fq_client_t *c, const uint8_t *body, size_t len, fq_buf_t *reply,
                      fq_err_t *err) {
  int rc = fq_client_send(c, body, len, err);
  if (rc) return rc;
  rc = fq_client_recv(c, reply, c->timeout_ms, err);
  if (rc == -ETIMEDOUT || rc == -EINTR || rc == FQ_EAUTH) {
    /* A reply that arrives after we gave up must never be read as the
     * answer to the next request: a fresh socket has a fresh identity, so
     * the daemon's late reply is dropped by its ROUTER.  After a refused
     * handshake the request is still queued on the old socket; it must
     * not go out later, should a handshake succeed. */
    client_close(c);
    fq_err_t e2;
    if (client_open(c, &e2)) {
      if (err) *err = e2;
      return e2.code;
    }
  }
  return rc;
}

/* ------------------------------------------------------------------ */
/* Subscriber                                                           */

struct fq_sub {
  void *ctx;
  void *sock;
  char *endpoint;
  hs_watch_t hs;
  bool connected;
};

fq_sub_t *fq_sub_new_opts(const fq_client_opts_t *o, const char *const *prefixes, size_t n,
                          fq_err_t *err) {
  fq_sub_t *s = calloc(1, sizeof *s);
  int linger = 0, hwm = 100000;
  int64_t maxmsg = FQ_CLIENT_MAX_REPLY;
  fq_curve_creds_t cc;
  memset(&cc, 0, sizeof cc);
  if (!s) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  if (fq_curve_creds_load(&cc, o, err)) goto fail;
  s->endpoint = strdup(o->endpoint ? o->endpoint : "");
  if (!s->endpoint) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  s->ctx = zmq_ctx_new();
  if (!s->ctx) {
    fq_errf(err, FQ_EINTERNAL, "cannot create ZeroMQ context");
    goto fail;
  }
  s->sock = zmq_socket(s->ctx, ZMQ_SUB);
  if (!s->sock) {
    zmq_fail(err, "zmq_socket");
    goto fail;
  }
  if (zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger) ||
      zmq_setsockopt(s->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
      zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg)) {
    zmq_fail(err, "zmq_setsockopt");
    goto fail;
  }
  if (fq_curve_creds_apply(&cc, s->sock, err)) goto fail;
  s->hs.curve = cc.on;
  for (size_t i = 0; i < n || (n == 0 && i == 0); i++) {
    const char *pfx = n ? prefixes[i] : "";
    if (zmq_setsockopt(s->sock, ZMQ_SUBSCRIBE, pfx, strlen(pfx))) {
      zmq_fail(err, "ZMQ_SUBSCRIBE");
      goto fail;
    }
  }
  /* The monitor tells fq_sub_wait_connected() when the handshake is done
   * or refused. */
  if (hs_attach(&s->hs, s->ctx, s->sock, "sub", err)) goto fail;
  if (zmq_connect(s->sock, s->endpoint)) {
    fq_errf(err, FQ_EINTERNAL, "connect %s: %s", s->endpoint, zmq_strerror(zmq_errno()));
    goto fail;
  }
  fq_curve_creds_wipe(&cc);
  return s;
fail:
  fq_curve_creds_wipe(&cc);
  fq_sub_destroy(&s);
  return NULL;
}

fq_sub_t *fq_sub_new(const char *endpoint, const char *const *prefixes, size_t n,
                     fq_err_t *err) {
  fq_client_opts_t o = {.endpoint = endpoint};
  return fq_sub_new_opts(&o, prefixes, n, err);
}

void fq_sub_destroy(fq_sub_t **sp) {
  if (!sp || !*sp) return;
  fq_sub_t *s = *sp;
  hs_detach(&s->hs, s->sock);
  if (s->sock) zmq_close(s->sock);
  if (s->ctx) zmq_ctx_term(s->ctx);
  free(s->endpoint);
  free(s);
  *sp = NULL;
}

int fq_sub_wait_connected(fq_sub_t *s, int timeout_ms, fq_err_t *err) {
  int64_t deadline = fq_mono_ns() + (int64_t)timeout_ms * 1000000;
  while (!s->connected) {
    zmq_pollitem_t pi = {s->hs.mon, 0, ZMQ_POLLIN, 0};
    int n = zmq_poll(&pi, 1, ms_left(deadline));
    if (n < 0 && zmq_errno() == EINTR) return fq_errf(err, -EINTR, "interrupted");
    if (n < 0) return zmq_fail(err, "zmq_poll");
    if (n == 0) return fq_errf(err, -ETIMEDOUT, "publisher not reached within %d ms", timeout_ms);
    int rc = hs_drain(&s->hs, "publisher", s->endpoint, err);
    if (rc) return rc;
    /* Connected once a handshake succeeded; a later failure in the same
     * drain (a reconnect refused) takes that back. */
    s->connected = s->hs.ok;
  }
  return 0;
}

static int recv_frame(void *sock, fq_buf_t *into, bool *more, bool *toolarge) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  if (zmq_msg_recv(&m, sock, 0) < 0) {
    zmq_msg_close(&m);
    return -1;
  }
  *more = zmq_msg_more(&m);
  if (into && fq_buf_append(into, zmq_msg_data(&m), zmq_msg_size(&m))) *toolarge = true;
  zmq_msg_close(&m);
  return 0;
}

int fq_sub_recv(fq_sub_t *s, fq_buf_t *topic, fq_buf_t *body, int timeout_ms, fq_err_t *err) {
  zmq_pollitem_t pi = {s->sock, 0, ZMQ_POLLIN, 0};
  int n = zmq_poll(&pi, 1, timeout_ms);
  bool more = false, toolarge = false;
  int frames = 0;
  if (n < 0) {
    if (zmq_errno() == EINTR) return fq_errf(err, -EINTR, "interrupted");
    return zmq_fail(err, "zmq_poll");
  }
  if (n == 0) return fq_errf(err, -ETIMEDOUT, "no event within %d ms", timeout_ms);
  fq_buf_reset(topic);
  fq_buf_reset(body);
  do {
    fq_buf_t *into = frames == 0 ? topic : frames == 1 ? body : NULL;
    if (recv_frame(s->sock, into, &more, &toolarge)) return zmq_fail(err, "zmq_msg_recv");
    frames++;
  } while (more);
  if (toolarge) return fq_errf(err, FQ_ETOOLARGE, "event larger than the buffer's cap");
  if (frames != 2) return fq_errf(err, FQ_EBADREQ, "event with %d frames, expected 2", frames);
  return 0;
}
