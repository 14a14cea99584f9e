/*
 * The one JSON body builder for REST endpoints and the JSON-to-params
 * conversion (see payload.h).  The protobuf builders of signed commands and
 * the payloads by name are in commands.c, next to the table entries that
 * name them, so this file uses nothing of commands.c and the table can
 * name fq_payload_build_json.
 */
#include "payload.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <msgpack.h>

/* ---------------------------------------------------------------------- */
/* JSON bodies                                                             */

#define MP_MAX_DEPTH 16

static json_t *mp_to_json(const msgpack_object *o, int depth, fq_err_t *err) {
  if (depth > MP_MAX_DEPTH) {
    fq_errf(err, FQ_EBADPARAM, "map nested deeper than %d levels", MP_MAX_DEPTH);
    return NULL;
  }
  switch (o->type) {
  case MSGPACK_OBJECT_NIL: return json_null();
  case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    if (o->via.u64 > (uint64_t)INT64_MAX) return json_real((double)o->via.u64);
    return json_integer((json_int_t)o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    if (!isfinite(o->via.f64)) break;
    return json_real(o->via.f64);
  case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
  case MSGPACK_OBJECT_ARRAY: {
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < o->via.array.size; i++) {
      json_t *v = mp_to_json(&o->via.array.ptr[i], depth + 1, err);
      if (!v || json_array_append_new(a, v)) {
        json_decref(a);
        return NULL;
      }
    }
    return a;
  }
  case MSGPACK_OBJECT_MAP: {
    json_t *m = json_object();
    for (uint32_t i = 0; m && i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      if (kv->key.type != MSGPACK_OBJECT_STR) {
        fq_errf(err, FQ_EBADPARAM, "map keys must be strings to become JSON");
        json_decref(m);
        return NULL;
      }
      json_t *v = mp_to_json(&kv->val, depth + 1, err);
      if (!v || json_object_setn_new(m, kv->key.via.str.ptr, kv->key.via.str.size, v)) {
        json_decref(m);
        return NULL;
      }
    }
    return m;
  }
  default: break;
  }
  fq_errf(err, FQ_EBADPARAM, "map holds a value JSON cannot carry (binary, NaN or extension)");
  return NULL;
}

static json_t *map_param_to_json(const fq_pval_t *p, fq_err_t *err) {
  msgpack_unpacked u;
  size_t off = 0;
  json_t *j = NULL;
  msgpack_unpacked_init(&u);
  msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)p->v.raw.p, p->v.raw.n, &off);
  if (r != MSGPACK_UNPACK_SUCCESS || off != p->v.raw.n || u.data.type != MSGPACK_OBJECT_MAP) {
    fq_errf(err, FQ_EBADPARAM, "params.%.*s: not a single msgpack map", (int)p->name_len, p->name);
  } else {
    j = mp_to_json(&u.data, 0, err);
    if (!j && err && err->code == 0)
      fq_errf(err, FQ_EBADPARAM, "params.%.*s: cannot convert to JSON", (int)p->name_len, p->name);
  }
  msgpack_unpacked_destroy(&u);
  return j;
}

int fq_payload_build_json(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_buf_t *out,
                          fq_err_t *err) {
  (void)cmd;
  int rc = 0;
  char *text = NULL;
  json_t *o = json_object();
  if (!o) return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const fq_pval_t *p = &params[i];
    json_t *v = NULL;
    switch (p->type) {
    case FQ_PT_BOOL: v = json_boolean(p->v.b); break;
    case FQ_PT_INT: v = json_integer((json_int_t)p->v.i); break;
    case FQ_PT_FLOAT:
      if (!isfinite(p->v.f)) {
        rc = fq_errf(err, FQ_EBADPARAM, "params.%.*s: not a finite number", (int)p->name_len,
                     p->name);
        goto out;
      }
      v = json_real(p->v.f);
      break;
    case FQ_PT_STR: v = json_stringn(p->v.s.p, p->v.s.n); break;
    case FQ_PT_MAP:
      if (!(v = map_param_to_json(p, err))) {
        rc = err && err->code ? err->code : FQ_EBADPARAM;
        goto out;
      }
      break;
    }
    if (!v) {
      rc = fq_errf(err, FQ_EBADPARAM, "params.%.*s: not representable in JSON (invalid UTF-8?)",
                   (int)p->name_len, p->name);
      goto out;
    }
    if (json_object_setn_new(o, p->name, p->name_len, v)) {
      rc = fq_errf(err, FQ_EBADPARAM, "params.%.*s: bad name", (int)p->name_len, p->name);
      goto out;
    }
  }
  text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!text) {
    rc = -ENOMEM;
    goto out;
  }
  rc = fq_buf_append_str(out, text);
out:
  free(text);
  json_decref(o);
  return rc;
}

int fq_pvals_from_json(const json_t *j, fq_pval_t *pv, size_t *n, fq_err_t *err) {
  const char *k;
  json_t *v;
  *n = 0;
  if (!json_is_object(j)) return fq_errf(err, FQ_EBADPARAM, "params: must be a JSON object");
  json_object_foreach((json_t *)j, k, v) {
    if (*n == FQ_MAX_PARAMS)
      return fq_errf(err, FQ_EBADPARAM, "params: at most %d parameters", FQ_MAX_PARAMS);
    fq_pval_t *p = &pv[(*n)++];
    memset(p, 0, sizeof *p);
    p->name = k;
    p->name_len = strlen(k);
    if (json_is_boolean(v)) {
      p->type = FQ_PT_BOOL;
      p->v.b = json_is_true(v);
    } else if (json_is_integer(v)) {
      p->type = FQ_PT_INT;
      p->v.i = json_integer_value(v);
    } else if (json_is_real(v)) {
      p->type = FQ_PT_FLOAT;
      p->v.f = json_real_value(v);
    } else if (json_is_string(v)) {
      p->type = FQ_PT_STR;
      p->v.s.p = json_string_value(v);
      p->v.s.n = json_string_length(v);
    } else {
      return fq_errf(err, FQ_EBADPARAM, "params.%s: null, arrays and objects are not accepted", k);
    }
  }
  return 0;
}
