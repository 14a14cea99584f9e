/*
 * The wire codec: the strict request decoder, the canonical request hash
 * used for dedupe, and the msgpack encoders of replies and status events
 * (proto/wire-protocol.md is the contract).
 *
 * Decoding runs on the ingress thread for every request, so it never
 * allocates: it walks the body twice with the bounded reader of mpread.h.
 * The first pass checks the structure (sizes, depth, trailing bytes),
 * records where each known key's value lies and captures `req` so that
 * even a rejected request gets its `req` echoed.  The second pass checks
 * each field in a fixed order, so a request with several faults always
 * gets the same message.
 */
#include "fleetq/wire.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "byteorder.h"
#include "mpread.h"

/* ---- states ------------------------------------------------------------- */

static const struct {
  const char *name;
  bool terminal;
} states[] = {
#define FQ__ST_DEF(e, name, term) {name, term},
    FQ_STATES(FQ__ST_DEF)
#undef FQ__ST_DEF
};

const char *fq_state_name(int st) {
  return st >= 0 && st < FQ_ST_COUNT_ ? states[st].name : "?";
}

int fq_state_parse(const char *s, size_t n) {
  for (int i = 0; i < FQ_ST_COUNT_; i++)
    if (strlen(states[i].name) == n && memcmp(states[i].name, s, n) == 0) return i;
  return -1;
}

bool fq_state_terminal(int st) { return st >= 0 && st < FQ_ST_COUNT_ && states[st].terminal; }

/* ---- request keys ------------------------------------------------------- */

enum key_id {
  K_V,
  K_OP,
  K_REQ,
  K_TENANT,
  K_KEY,
  K_ACCOUNT,
  K_VIN,
  K_SITE,
  K_COMMAND,
  K_PARAMS,
  K_TTL,
  K_COALESCE,
  K_ID,
  K_SHARD,
  K_AFTER,
  K_LIMIT,
  K_ACTION,
  K_WAKE,
  K_STUCK,
  K_NOT_BEFORE,
  K_DAYS,
  K_DEVICES,
  K_RATE,
  K_RATIO,
  K_PART,
  K_PARTS,
  K_COUNT_
};

static const char *const key_names[K_COUNT_] = {
    [K_V] = "v",           [K_OP] = "op",         [K_REQ] = "req",        [K_TENANT] = "tenant",
    [K_KEY] = "key",       [K_ACCOUNT] = "account", [K_VIN] = "vin",      [K_SITE] = "site",
    [K_COMMAND] = "command", [K_PARAMS] = "params", [K_TTL] = "ttl_ms",   [K_COALESCE] = "coalesce",
    [K_ID] = "id",         [K_SHARD] = "shard",   [K_AFTER] = "after",    [K_LIMIT] = "limit",
    [K_ACTION] = "action",  [K_WAKE] = "wake",     [K_STUCK] = "stuck_ms", [K_NOT_BEFORE] = "not_before",
    [K_DAYS] = "days",     [K_DEVICES] = "devices", [K_RATE] = "rate",
    [K_RATIO] = "max_failure_ratio", [K_PART] = "part", [K_PARTS] = "parts",
};

#define B(k) (1u << (k))
#define COMMON_KEYS (B(K_V) | B(K_OP) | B(K_REQ))

/* `optional`: the keys of the op that a request may leave out.  Many
 * msgpack encoders write nil for a field that is None / undefined, so a
 * nil value of one of these counts as the key being absent.  `v` is
 * optional for every op (checked before the op is known); `req` is not
 * listed: a nil `req` is a value like any other and is echoed. */
static const struct {
  const char *name;
  int op;
  uint32_t allowed; /* keys this op takes; admin takes any */
  uint32_t optional;
} ops[] = {
    {"submit", FQ_OP_SUBMIT,
     COMMON_KEYS | B(K_TENANT) | B(K_KEY) | B(K_ACCOUNT) | B(K_VIN) | B(K_SITE) | B(K_COMMAND) |
         B(K_PARAMS) | B(K_TTL) | B(K_COALESCE) | B(K_WAKE) | B(K_NOT_BEFORE),
     B(K_VIN) | B(K_SITE) | B(K_PARAMS) | B(K_TTL) | B(K_COALESCE) | B(K_WAKE) | B(K_NOT_BEFORE)},
    {"get", FQ_OP_GET, COMMON_KEYS | B(K_TENANT) | B(K_KEY) | B(K_ID),
     B(K_TENANT) | B(K_KEY) | B(K_ID)},
    {"cancel", FQ_OP_CANCEL, COMMON_KEYS | B(K_TENANT) | B(K_KEY) | B(K_ID),
     B(K_TENANT) | B(K_KEY) | B(K_ID)},
    {"history", FQ_OP_HISTORY, COMMON_KEYS | B(K_SHARD) | B(K_AFTER) | B(K_LIMIT) | B(K_TENANT),
     B(K_AFTER) | B(K_LIMIT) | B(K_TENANT)},
    {"ping", FQ_OP_PING, COMMON_KEYS, 0},
    {"health", FQ_OP_HEALTH, COMMON_KEYS | B(K_STUCK), B(K_STUCK)},
    {"admin", FQ_OP_ADMIN, UINT32_MAX, 0},
    {"usage", FQ_OP_USAGE, COMMON_KEYS | B(K_TENANT) | B(K_DAYS), B(K_TENANT) | B(K_DAYS)},
    {"campaign", FQ_OP_CAMPAIGN,
     COMMON_KEYS | B(K_TENANT) | B(K_KEY) | B(K_COMMAND) | B(K_PARAMS) | B(K_TTL) | B(K_DEVICES) |
         B(K_RATE) | B(K_RATIO) | B(K_NOT_BEFORE) | B(K_PART) | B(K_PARTS),
     B(K_PARAMS) | B(K_TTL) | B(K_RATE) | B(K_RATIO) | B(K_NOT_BEFORE) | B(K_PART) | B(K_PARTS)},
    {"campaign_get", FQ_OP_CAMPAIGN_GET, COMMON_KEYS | B(K_TENANT) | B(K_KEY) | B(K_ID),
     B(K_TENANT) | B(K_KEY) | B(K_ID)},
    {"campaign_abort", FQ_OP_CAMPAIGN_ABORT, COMMON_KEYS | B(K_TENANT) | B(K_KEY) | B(K_ID),
     B(K_TENANT) | B(K_KEY) | B(K_ID)},
};

static bool eq(const uint8_t *p, size_t n, const char *lit, size_t litlen) {
  return n == litlen && memcmp(p, lit, n) == 0;
}
#define EQ(p, n, lit) eq(p, n, lit, sizeof(lit) - 1)

/* Known key id, or -1.  Dispatch on length first: this runs for every key
 * of every request. */
static int key_lookup(const uint8_t *p, size_t n) {
  switch (n) {
  case 1: return p[0] == 'v' ? K_V : -1;
  case 2: return EQ(p, n, "op") ? K_OP : EQ(p, n, "id") ? K_ID : -1;
  case 3: return EQ(p, n, "key") ? K_KEY : EQ(p, n, "req") ? K_REQ : EQ(p, n, "vin") ? K_VIN : -1;
  case 4:
    return EQ(p, n, "site")   ? K_SITE
           : EQ(p, n, "wake") ? K_WAKE
           : EQ(p, n, "days") ? K_DAYS
           : EQ(p, n, "rate") ? K_RATE
           : EQ(p, n, "part") ? K_PART
                              : -1;
  case 5:
    return EQ(p, n, "shard")   ? K_SHARD
           : EQ(p, n, "after") ? K_AFTER
           : EQ(p, n, "limit") ? K_LIMIT
           : EQ(p, n, "parts") ? K_PARTS
                               : -1;
  case 6:
    return EQ(p, n, "tenant")   ? K_TENANT
           : EQ(p, n, "params") ? K_PARAMS
           : EQ(p, n, "ttl_ms") ? K_TTL
           : EQ(p, n, "action") ? K_ACTION
                                : -1;
  case 7:
    return EQ(p, n, "account")   ? K_ACCOUNT
           : EQ(p, n, "command") ? K_COMMAND
           : EQ(p, n, "devices") ? K_DEVICES
                                 : -1;
  case 8: return EQ(p, n, "coalesce") ? K_COALESCE : EQ(p, n, "stuck_ms") ? K_STUCK : -1;
  case 10: return EQ(p, n, "not_before") ? K_NOT_BEFORE : -1;
  case 17: return EQ(p, n, "max_failure_ratio") ? K_RATIO : -1;
  default: return -1;
  }
}

/* ---- pass 1: structure -------------------------------------------------- */

enum key_problem { KP_NONE, KP_NONSTR, KP_BADUTF8 };

typedef struct scan {
  const uint8_t *val[K_COUNT_]; /* start of each known key's value */
  size_t vlen[K_COUNT_];
  uint32_t seen;
  uint32_t nil;         /* known keys whose value is nil */
  int kp;               /* first key that is no UTF-8 string: KP_NONSTR, KP_BADUTF8 */
  size_t kp_off;        /* its byte offset */
  int kp_kind;          /* KP_NONSTR: the key's msgpack kind */
  int dup_key;          /* first duplicate known key (its id), or -1 */
  const uint8_t *unk;   /* first unknown key, or NULL */
  size_t unk_len;
  int req_kind;         /* kind of `req`'s value, 0 if absent */
  bool req_badutf8;
  size_t req_len;       /* its encoded size, when above FQ_WIRE_MAX_REQ (else 0) */
} scan_t;

static bool is_scalar(int kind) {
  return kind == FQ__MP_NIL || kind == FQ__MP_BOOL || kind == FQ__MP_UINT ||
         kind == FQ__MP_NINT || kind == FQ__MP_FLOAT || kind == FQ__MP_STR || kind == FQ__MP_BIN;
}

static int scan_body(const uint8_t *buf, size_t len, scan_t *s, fq_request_t *req, fq_err_t *err) {
  fq__mp_rd_t r;
  fq__mp_obj_t top, k;
  fq__mp_rd_init(&r, buf, len);
  if (len == 0) return fq_errf(err, FQ_EBADREQ, "empty request body");
  int rc = fq__mp_next(&r, &top, err);
  if (rc) return rc;
  if (top.kind != FQ__MP_MAP)
    return fq_errf(err, FQ_EBADREQ, "request body must be a map, got %s",
                   fq__mp_kind_name(top.kind));
  for (uint32_t i = 0; i < top.v.count; i++) {
    const uint8_t *kat = r.p;
    rc = fq__mp_next(&r, &k, err);
    if (rc) return rc;
    int id = -1;
    if (k.kind != FQ__MP_STR) {
      if (k.kind == FQ__MP_ARRAY || k.kind == FQ__MP_MAP) {
        /* Step over the container key's contents, still bounded. */
        r.p = kat;
        rc = fq__mp_skip(&r, 2, FQ_WIRE_MAX_DEPTH, err);
        if (rc) return rc;
      }
      if (!s->kp) {
        s->kp = KP_NONSTR;
        s->kp_off = (size_t)(kat - buf);
        s->kp_kind = k.kind;
      }
    } else if (!fq__utf8_valid(k.p, k.len)) {
      if (!s->kp) {
        s->kp = KP_BADUTF8;
        s->kp_off = (size_t)(kat - buf);
      }
    } else {
      id = key_lookup(k.p, k.len);
      if (id < 0) {
        if (!s->unk) {
          s->unk = k.p;
          s->unk_len = k.len;
        }
      } else if (s->seen & B(id)) {
        if (s->dup_key < 0) s->dup_key = id;
        id = -1;
      } else {
        s->seen |= B(id);
      }
    }
    const uint8_t *vat = r.p;
    rc = fq__mp_skip(&r, 2, FQ_WIRE_MAX_DEPTH, err);
    if (rc) return rc;
    if (id < 0) continue;
    s->val[id] = vat;
    s->vlen[id] = (size_t)(r.p - vat);
    if (*vat == 0xc0) s->nil |= B(id);
    if (id == K_REQ) {
      /* Capture `req` now: whatever else is wrong, the reply echoes it.
       * A string that is not UTF-8 is not echoed (strict clients could not
       * decode the reply) and is refused below. */
      fq__mp_rd_t vr;
      fq__mp_obj_t v;
      fq__mp_rd_init(&vr, vat, s->vlen[id]);
      if (fq__mp_next(&vr, &v, NULL) == 0) {
        s->req_kind = v.kind;
        s->req_badutf8 = v.kind == FQ__MP_STR && !fq__utf8_valid(v.p, v.len);
        /* Every reply echoes `req`, so its size is what a client can make
         * the daemon hold per reply it does not read: an oversized one is
         * refused and not echoed. */
        if (s->vlen[id] > FQ_WIRE_MAX_REQ) s->req_len = s->vlen[id];
        else if (is_scalar(v.kind) && !s->req_badutf8) {
          req->req_raw = vat;
          req->req_raw_len = s->vlen[id];
        }
      }
    }
  }
  if (r.p != r.end)
    return fq_errf(err, FQ_EBADREQ, "%zu trailing bytes after the request map",
                   (size_t)(r.end - r.p));
  return 0;
}

/* ---- pass 2: fields ----------------------------------------------------- */

/* Read the (already structure-checked) value of key k. */
static void val_obj(const scan_t *s, int k, fq__mp_obj_t *o) {
  fq__mp_rd_t r;
  fq__mp_rd_init(&r, s->val[k], s->vlen[k]);
  if (fq__mp_next(&r, o, NULL) != 0) o->kind = 0; /* cannot happen after pass 1 */
}

static int type_err(int k, const char *want, const fq__mp_obj_t *o, fq_err_t *err) {
  return fq_errf(err, FQ_EBADREQ, "\"%s\": expected %s, got %s", key_names[k], want,
                 fq__mp_kind_name(o->kind));
}

/* A missing required field.  One sent as nil was taken for absent (see
 * optional_keys): say so, since the sender did write the key. */
static int required(const scan_t *s, int k, fq_err_t *err) {
  if (s->nil & B(k))
    return fq_errf(err, FQ_EBADREQ, "\"%s\": required, got nil", key_names[k]);
  return fq_errf(err, FQ_EBADREQ, "\"%s\": required", key_names[k]);
}

/* A string field: UTF-8, byte length within lo..hi. */
static int get_str(const scan_t *s, int k, bool req, size_t lo, size_t hi, fq_str_t *out,
                   fq_err_t *err) {
  if (!(s->seen & B(k))) return req ? required(s, k, err) : 0;
  fq__mp_obj_t o;
  val_obj(s, k, &o);
  if (o.kind != FQ__MP_STR) return type_err(k, "string", &o, err);
  if (!fq__utf8_valid(o.p, o.len))
    return fq_errf(err, FQ_EBADREQ, "\"%s\": invalid UTF-8", key_names[k]);
  if (o.len < lo || o.len > hi)
    return fq_errf(err, FQ_EBADREQ, "\"%s\": length %" PRIu32 " is out of range %zu..%zu bytes",
                   key_names[k], o.len, lo, hi);
  out->p = (const char *)o.p;
  out->n = o.len;
  return 0;
}

/* An unsigned integer field within lo..hi. */
static int get_uint(const scan_t *s, int k, uint64_t lo, uint64_t hi, uint64_t *out,
                    fq_err_t *err) {
  fq__mp_obj_t o;
  val_obj(s, k, &o);
  if (o.kind == FQ__MP_NINT)
    return fq_errf(err, FQ_EBADREQ, "\"%s\": %" PRId64 " is out of range %" PRIu64 "..%" PRIu64,
                   key_names[k], o.v.i, lo, hi);
  if (o.kind != FQ__MP_UINT) return type_err(k, "integer", &o, err);
  if (o.v.u < lo || o.v.u > hi)
    return fq_errf(err, FQ_EBADREQ, "\"%s\": %" PRIu64 " is out of range %" PRIu64 "..%" PRIu64,
                   key_names[k], o.v.u, lo, hi);
  *out = o.v.u;
  return 0;
}

static void quoted(const fq_str_t *v, char *out, size_t cap) {
  fq__mp_quote((const uint8_t *)v->p, v->n, out, cap);
}

static int check_tenant(const fq_str_t *t, fq_err_t *err) {
  for (size_t i = 0; i < t->n; i++) {
    char c = t->p[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-')) {
      char q[64];
      quoted(t, q, sizeof q);
      return fq_errf(err, FQ_EBADREQ,
                     "\"tenant\": \"%s\" has a character outside [A-Za-z0-9._-] at byte %zu", q, i);
    }
  }
  return 0;
}

/* Keys and account names are opaque, but they end up in logs, events and
 * storage keys: control characters are refused. */
static int check_no_ctl(int k, const fq_str_t *v, fq_err_t *err) {
  for (size_t i = 0; i < v->n; i++) {
    unsigned char c = (unsigned char)v->p[i];
    if (c < 0x20 || c == 0x7f)
      return fq_errf(err, FQ_EBADREQ, "\"%s\": control character 0x%02x at byte %zu", key_names[k],
                     c, i);
  }
  return 0;
}

static bool vin_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z' && c != 'I' && c != 'O' && c != 'Q');
}

static int check_vin(const fq_str_t *v, fq_err_t *err) {
  char q[64];
  quoted(v, q, sizeof q);
  if (v->n != 17)
    return fq_errf(err, FQ_EBADREQ, "\"vin\": \"%s\" is %zu characters, a VIN has 17", q, v->n);
  for (size_t i = 0; i < 17; i++)
    if (!vin_char(v->p[i]))
      return fq_errf(err, FQ_EBADREQ,
                     "\"vin\": \"%s\" has an invalid character at byte %zu (allowed: A-H J-N P "
                     "R-Z 0-9; never I, O or Q)",
                     q, i);
  return 0;
}

static int check_id(const fq_str_t *v, fq_err_t *err) {
  for (size_t i = 0; i < v->n; i++)
    if (v->p[i] <= 0x20 || v->p[i] >= 0x7f)
      return fq_errf(err, FQ_EBADREQ, "\"id\": invalid character at byte %zu", i);
  return 0;
}

/* Decode a params map of len bytes at buf, a value inside the message that
 * starts at base (positions in messages count from base, as for every
 * other fault of a request).  With cmd, names are checked against the
 * command while decoding, so that a nil or an array gets "expected X"
 * rather than a generic message; fq_cmd_validate() does the rest. */
static int decode_params(const uint8_t *base, const uint8_t *buf, size_t len,
                         const fq_cmd_t *cmd, fq_pval_t *out, size_t *nout, fq_err_t *err) {
  fq__mp_rd_t r;
  fq__mp_obj_t m, k, v;
  char nm[64];
  *nout = 0;
  fq__mp_rd_init_at(&r, base, buf, len);
  int rc = fq__mp_next(&r, &m, err);
  if (rc) return rc;
  if (m.kind != FQ__MP_MAP)
    return fq_errf(err, FQ_EBADREQ, "\"params\": expected map, got %s", fq__mp_kind_name(m.kind));
  if (m.v.count > FQ_MAX_PARAMS)
    return fq_errf(err, FQ_EBADPARAM, "\"params\": %" PRIu32 " entries, at most %d", m.v.count,
                   FQ_MAX_PARAMS);
  for (uint32_t i = 0; i < m.v.count; i++) {
    const uint8_t *kat = r.p;
    rc = fq__mp_next(&r, &k, err);
    if (rc) return rc;
    if (k.kind != FQ__MP_STR)
      return fq_errf(err, FQ_EBADPARAM, "\"params\": key at byte %zu: keys must be strings (got %s)",
                     (size_t)(kat - base), fq__mp_kind_name(k.kind));
    fq__mp_quote(k.p, k.len, nm, sizeof nm);
    if (!fq__utf8_valid(k.p, k.len))
      return fq_errf(err, FQ_EBADPARAM, "params.%s: invalid UTF-8 in name", nm);
    const fq_param_spec_t *sp = NULL;
    if (cmd) {
      for (size_t j = 0; j < cmd->nparams && !sp; j++)
        if (eq(k.p, k.len, cmd->params[j].name, strlen(cmd->params[j].name)))
          sp = &cmd->params[j];
      if (!sp)
        return fq_errf(err, FQ_EBADPARAM, "params.%s: unknown parameter for %s", nm, cmd->name);
    }
    for (size_t j = 0; j < i; j++)
      if (eq(k.p, k.len, out[j].name, out[j].name_len))
        return fq_errf(err, FQ_EBADPARAM, "params.%s: duplicate parameter", nm);
    fq_pval_t *pv = &out[i];
    pv->name = (const char *)k.p;
    pv->name_len = k.len;
    const uint8_t *vat = r.p;
    rc = fq__mp_next(&r, &v, err);
    if (rc) return rc;
    switch (v.kind) {
    case FQ__MP_BOOL:
      pv->type = FQ_PT_BOOL;
      pv->v.b = v.v.b;
      break;
    case FQ__MP_UINT:
      if (v.v.u > INT64_MAX)
        return fq_errf(err, FQ_EBADPARAM, "params.%s: %" PRIu64 " is out of range", nm, v.v.u);
      pv->type = FQ_PT_INT;
      pv->v.i = (int64_t)v.v.u;
      break;
    case FQ__MP_NINT:
      pv->type = FQ_PT_INT;
      pv->v.i = v.v.i;
      break;
    case FQ__MP_FLOAT:
      pv->type = FQ_PT_FLOAT;
      pv->v.f = v.v.f;
      break;
    case FQ__MP_STR:
      if (!fq__utf8_valid(v.p, v.len))
        return fq_errf(err, FQ_EBADPARAM, "params.%s: invalid UTF-8", nm);
      pv->type = FQ_PT_STR;
      pv->v.s.p = (const char *)v.p;
      pv->v.s.n = v.len;
      break;
    case FQ__MP_MAP: {
      /* A nested map travels on as JSON (tou_settings): check it is
       * representable now rather than fail at send time. */
      r.p = vat;
      char what[80];
      snprintf(what, sizeof what, "params.%s", nm);
      rc = fq__mp_skip_jsonish(&r, 3, FQ_WIRE_MAX_DEPTH, what, err);
      if (rc) return rc;
      pv->type = FQ_PT_MAP;
      pv->v.raw.p = vat;
      pv->v.raw.n = (size_t)(r.p - vat);
      break;
    }
    default:
      if (sp)
        return fq_errf(err, FQ_EBADPARAM, "params.%s: expected %s, got %s", nm,
                       fq_ptype_name(sp->type), fq__mp_kind_name(v.kind));
      return fq_errf(err, FQ_EBADPARAM, "params.%s: unsupported type %s", nm,
                     fq__mp_kind_name(v.kind));
    }
    *nout = i + 1;
  }
  if (r.p != r.end)
    return fq_errf(err, FQ_EBADREQ, "\"params\": %zu trailing bytes after the map",
                   (size_t)(r.end - r.p));
  return 0;
}

int fq_wire_decode_params(const uint8_t *buf, size_t len, fq_pval_t *out, size_t *n,
                          fq_err_t *err) {
  *n = 0;
  if (len > FQ_WIRE_MAX_PARAMS_BYTES)
    return fq_errf(err, FQ_ETOOLARGE, "\"params\": %zu bytes, at most %d", len,
                   FQ_WIRE_MAX_PARAMS_BYTES);
  if (len == 0) return fq_errf(err, FQ_EBADREQ, "\"params\": empty");
  return decode_params(buf, buf, len, NULL, out, n, err);
}

/* What follows the command in a submit and a campaign alike: "params"
 * (checked against req->cmd, found by the caller), "ttl_ms", "coalesce",
 * "wake" and "not_before", in that order, so that a request with more than
 * one bad field names the same one whichever op carries it.  A campaign's
 * key set refuses "coalesce" and "wake" before this runs, so for a campaign
 * those two are never seen here. */
static int decode_cmd_args(const uint8_t *body, const scan_t *s, fq_request_t *req,
                           fq_err_t *err) {
  int rc;
  if (s->seen & B(K_PARAMS)) {
    if (s->vlen[K_PARAMS] > FQ_WIRE_MAX_PARAMS_BYTES)
      return fq_errf(err, FQ_ETOOLARGE, "\"params\": %zu bytes, at most %d", s->vlen[K_PARAMS],
                     FQ_WIRE_MAX_PARAMS_BYTES);
    rc = decode_params(body, s->val[K_PARAMS], s->vlen[K_PARAMS], req->cmd, req->params,
                       &req->nparams, err);
    if (rc) return rc;
    req->params_raw = s->val[K_PARAMS];
    req->params_raw_len = s->vlen[K_PARAMS];
  }
  if ((rc = fq_cmd_validate(req->cmd, req->params, req->nparams, err))) return rc;

  if (s->seen & B(K_TTL)) {
    fq__mp_obj_t o;
    val_obj(s, K_TTL, &o);
    if (o.kind == FQ__MP_NINT)
      return fq_errf(err, FQ_EBADREQ, "\"ttl_ms\": %" PRId64 " is out of range 1..%d", o.v.i,
                     FQ_WIRE_MAX_TTL_MS);
    uint64_t ttl;
    if ((rc = get_uint(s, K_TTL, 1, FQ_WIRE_MAX_TTL_MS, &ttl, err))) return rc;
    req->ttl_ms = (int64_t)ttl;
  }
  if (s->seen & B(K_COALESCE)) {
    fq__mp_obj_t o;
    val_obj(s, K_COALESCE, &o);
    if (o.kind != FQ__MP_BOOL) return type_err(K_COALESCE, "bool", &o, err);
    req->coalesce = o.v.b;
  }
  if (s->seen & B(K_WAKE)) {
    fq__mp_obj_t o;
    val_obj(s, K_WAKE, &o);
    if (o.kind != FQ__MP_BOOL) return type_err(K_WAKE, "bool", &o, err);
    req->no_wake = !o.v.b;
  }
  if (s->seen & B(K_NOT_BEFORE)) {
    /* Unix ms.  How far ahead it may be depends on the clock: the shard
     * checks that (bad_param); a time already past means at once. */
    uint64_t nb;
    if ((rc = get_uint(s, K_NOT_BEFORE, 0, INT64_MAX, &nb, err))) return rc;
    req->not_before = (int64_t)nb;
    req->has_not_before = true;
  }
  return 0;
}

static int decode_submit(const uint8_t *body, const scan_t *s, fq_request_t *req, fq_err_t *err) {
  int rc;
  char q[64];
  if ((rc = get_str(s, K_TENANT, true, 1, 64, &req->tenant, err))) return rc;
  if ((rc = check_tenant(&req->tenant, err))) return rc;
  if ((rc = get_str(s, K_KEY, true, 1, 128, &req->key, err))) return rc;
  if ((rc = check_no_ctl(K_KEY, &req->key, err))) return rc;
  if ((rc = get_str(s, K_ACCOUNT, true, 1, 128, &req->account, err))) return rc;
  if ((rc = check_no_ctl(K_ACCOUNT, &req->account, err))) return rc;

  bool has_vin = s->seen & B(K_VIN), has_site = s->seen & B(K_SITE);
  if (has_vin && has_site)
    return fq_errf(err, FQ_EBADREQ, "\"vin\" and \"site\": give exactly one, not both");
  if (!has_vin && !has_site)
    return fq_errf(err, FQ_EBADREQ, "\"vin\" or \"site\": required (exactly one)");
  fq_devtype_t dev;
  if (has_vin) {
    if ((rc = get_str(s, K_VIN, true, 0, SIZE_MAX, &req->vin, err))) return rc;
    if ((rc = check_vin(&req->vin, err))) return rc;
    dev = FQ_DEV_VEHICLE;
  } else {
    fq__mp_obj_t o;
    val_obj(s, K_SITE, &o);
    if (o.kind == FQ__MP_NINT || (o.kind == FQ__MP_UINT && o.v.u == 0)) {
      if (o.kind == FQ__MP_NINT)
        return fq_errf(err, FQ_EBADREQ, "\"site\": %" PRId64 " is not a positive integer", o.v.i);
      return fq_errf(err, FQ_EBADREQ, "\"site\": 0 is not a positive integer");
    }
    if (o.kind != FQ__MP_UINT) return type_err(K_SITE, "integer", &o, err);
    req->site = o.v.u;
    dev = FQ_DEV_SITE;
  }

  if ((rc = get_str(s, K_COMMAND, true, 1, 64, &req->command, err))) return rc;
  bool other = false;
  req->cmd = fq_cmd_find(req->command.p, req->command.n, dev, &other);
  if (!req->cmd) {
    quoted(&req->command, q, sizeof q);
    if (other)
      return fq_errf(err, FQ_EUNKCMD, "command \"%s\" is %s command, not %s command", q,
                     dev == FQ_DEV_VEHICLE ? "an energy-site" : "a vehicle",
                     dev == FQ_DEV_VEHICLE ? "a vehicle" : "an energy-site");
    return fq_errf(err, FQ_EUNKCMD, "unknown command \"%s\" for %s", q,
                   dev == FQ_DEV_VEHICLE ? "vehicles" : "energy sites");
  }

  return decode_cmd_args(body, s, req, err);
}

static size_t u64_dec(uint64_t v, char *out);

/* ---- campaigns ------------------------------------------------------------ */

/* A number (integer or float) as a double. */
static int get_num(const scan_t *s, int k, double *out, fq_err_t *err) {
  fq__mp_obj_t o;
  val_obj(s, k, &o);
  if (o.kind == FQ__MP_UINT) *out = (double)o.v.u;
  else if (o.kind == FQ__MP_NINT) *out = (double)o.v.i;
  else if (o.kind == FQ__MP_FLOAT) *out = o.v.f;
  else return type_err(k, "number", &o, err);
  if (*out != *out) return fq_errf(err, FQ_EBADREQ, "\"%s\": NaN is not a number", key_names[k]);
  return 0;
}

__attribute__((format(printf, 4, 5))) static int dev_err(uint32_t i, const char *field,
                                                         fq_err_t *err, const char *fmt, ...) {
  char m[FQ_ERRMSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof m, fmt, ap);
  va_end(ap);
  return fq_errf(err, FQ_EBADREQ, "\"devices\"[%" PRIu32 "]%s%s: %s", i, field[0] ? "." : "",
                 field, m);
}

int fq_wire_devices_begin(fq_wire_devit_t *it, const uint8_t *buf, size_t len, uint32_t *count,
                          fq_err_t *err) {
  fq__mp_rd_t r;
  fq__mp_obj_t a;
  fq__mp_rd_init(&r, buf, len);
  int rc = fq__mp_next(&r, &a, err);
  if (rc) return rc;
  if (a.kind != FQ__MP_ARRAY)
    return fq_errf(err, FQ_EBADREQ, "\"devices\": expected array, got %s",
                   fq__mp_kind_name(a.kind));
  it->p = r.p;
  it->end = r.end;
  it->index = 0;
  it->left = a.v.count;
  if (count) *count = a.v.count;
  return 0;
}

/* One device: a map of `vin` (a VIN) or `site` (a positive integer), and
 * `account`; nothing else. */
int fq_wire_devices_next(fq_wire_devit_t *it, fq_wire_device_t *d, fq_err_t *err) {
  if (!it->left) return 0;
  uint32_t i = it->index;
  fq__mp_rd_t r;
  fq__mp_obj_t m, k, v;
  fq__mp_rd_init(&r, it->p, (size_t)(it->end - it->p));
  int rc = fq__mp_next(&r, &m, err);
  if (rc) return rc;
  if (m.kind != FQ__MP_MAP)
    return dev_err(i, "", err, "expected a map of vin or site, and account, got %s",
                   fq__mp_kind_name(m.kind));
  memset(d, 0, sizeof *d);
  bool has_vin = false, has_site = false, has_acct = false;
  for (uint32_t j = 0; j < m.v.count; j++) {
    if ((rc = fq__mp_next(&r, &k, err))) return rc;
    if (k.kind != FQ__MP_STR)
      return dev_err(i, "", err, "keys must be strings (got %s)", fq__mp_kind_name(k.kind));
    const uint8_t *vat = r.p;
    if ((rc = fq__mp_next(&r, &v, err))) return rc;
    if (v.kind == FQ__MP_ARRAY || v.kind == FQ__MP_MAP) {
      r.p = vat;
      if ((rc = fq__mp_skip(&r, 4, FQ_WIRE_MAX_DEPTH, err))) return rc;
    }
    bool nil = v.kind == FQ__MP_NIL;
    if (EQ(k.p, k.len, "vin")) {
      if (nil) continue;
      if (has_vin) return dev_err(i, "", err, "duplicate key \"%s\"", "vin");
      has_vin = true;
      if (v.kind != FQ__MP_STR)
        return dev_err(i, "vin", err, "expected string, got %s", fq__mp_kind_name(v.kind));
      d->vin.p = (const char *)v.p;
      d->vin.n = v.len;
    } else if (EQ(k.p, k.len, "site")) {
      if (nil) continue;
      if (has_site) return dev_err(i, "", err, "duplicate key \"%s\"", "site");
      has_site = true;
      if (v.kind == FQ__MP_NINT || (v.kind == FQ__MP_UINT && v.v.u == 0))
        return dev_err(i, "site", err, "%s", "not a positive integer");
      if (v.kind != FQ__MP_UINT)
        return dev_err(i, "site", err, "expected integer, got %s", fq__mp_kind_name(v.kind));
      d->site = v.v.u;
    } else if (EQ(k.p, k.len, "account")) {
      if (has_acct) return dev_err(i, "", err, "duplicate key \"%s\"", "account");
      has_acct = true;
      if (v.kind != FQ__MP_STR)
        return dev_err(i, "account", err, "expected string, got %s", fq__mp_kind_name(v.kind));
      d->account.p = (const char *)v.p;
      d->account.n = v.len;
    } else {
      char q[64];
      fq__mp_quote(k.p, k.len, q, sizeof q);
      return dev_err(i, "", err, "unknown key \"%s\" (a device has vin or site, and account)", q);
    }
  }
  if (has_vin && has_site)
    return dev_err(i, "", err, "%s", "\"vin\" and \"site\": give exactly one, not both");
  if (!has_vin && !has_site)
    return dev_err(i, "", err, "%s", "\"vin\" or \"site\": required (exactly one)");
  if (!has_acct) return dev_err(i, "account", err, "%s", "required");
  if (d->account.n < 1 || d->account.n > 128 ||
      !fq__utf8_valid((const uint8_t *)d->account.p, d->account.n))
    return dev_err(i, "account", err, "%s", "must be 1..128 bytes of UTF-8");
  for (size_t j = 0; j < d->account.n; j++) {
    unsigned char c = (unsigned char)d->account.p[j];
    if (c < 0x20 || c == 0x7f) return dev_err(i, "account", err, "%s", "control character");
  }
  if (has_vin) {
    char q[64];
    fq__mp_quote((const uint8_t *)d->vin.p, d->vin.n, q, sizeof q);
    if (d->vin.n != 17)
      return dev_err(i, "vin", err, "\"%s\" is not 17 characters (a VIN has 17)", q);
    for (size_t j = 0; j < 17; j++)
      if (!vin_char(d->vin.p[j]))
        return dev_err(i, "vin", err,
                       "\"%s\" has an invalid character (allowed: A-H J-N P R-Z 0-9; never I, O "
                       "or Q)",
                       q);
  }
  it->p = r.p;
  it->index++;
  it->left--;
  return 1;
}

size_t fq_wire_device_name(const fq_wire_device_t *d, char *out, size_t cap) {
  if (d->vin.p) {
    if (d->vin.n + 1 > cap) return 0;
    memcpy(out, d->vin.p, d->vin.n);
    out[d->vin.n] = 0;
    return d->vin.n;
  }
  char tmp[24];
  size_t n = u64_dec(d->site, tmp);
  if (n + 1 > cap) return 0;
  memcpy(out, tmp, n);
  out[n] = 0;
  return n;
}

static int decode_campaign(const uint8_t *body, const scan_t *s, fq_request_t *req,
                           fq_err_t *err) {
  int rc;
  char q[64];
  if ((rc = get_str(s, K_TENANT, true, 1, 64, &req->tenant, err))) return rc;
  if ((rc = check_tenant(&req->tenant, err))) return rc;
  if ((rc = get_str(s, K_KEY, true, 1, FQ_WIRE_MAX_CAMPAIGN_KEY, &req->key, err))) return rc;
  if ((rc = check_no_ctl(K_KEY, &req->key, err))) return rc;
  if ((rc = get_str(s, K_COMMAND, true, 1, 64, &req->command, err))) return rc;
  if (!(s->seen & B(K_DEVICES))) return required(s, K_DEVICES, err);
  fq_wire_devit_t it;
  uint32_t count = 0;
  if ((rc = fq_wire_devices_begin(&it, s->val[K_DEVICES], s->vlen[K_DEVICES], &count, err)))
    return rc;
  if (count == 0)
    return fq_errf(err, FQ_EBADREQ, "\"devices\": empty: a campaign needs at least one device");
  if (count > FQ_WIRE_MAX_CAMPAIGN_DEVICES)
    return fq_errf(err, FQ_EBADREQ, "\"devices\": %" PRIu32 " devices, at most %d per campaign",
                   count, FQ_WIRE_MAX_CAMPAIGN_DEVICES);
  fq_wire_device_t d;
  fq_devtype_t dev = 0;
  while ((rc = fq_wire_devices_next(&it, &d, err)) == 1) {
    fq_devtype_t t = d.vin.p ? FQ_DEV_VEHICLE : FQ_DEV_SITE;
    if (!dev) {
      dev = t;
      bool other = false;
      req->cmd = fq_cmd_find(req->command.p, req->command.n, dev, &other);
      if (!req->cmd) {
        quoted(&req->command, q, sizeof q);
        if (other)
          return fq_errf(err, FQ_EUNKCMD, "command \"%s\" is %s command, not %s command (device 0)",
                         q, dev == FQ_DEV_VEHICLE ? "an energy-site" : "a vehicle",
                         dev == FQ_DEV_VEHICLE ? "a vehicle" : "an energy-site");
        return fq_errf(err, FQ_EUNKCMD, "unknown command \"%s\" for %s", q,
                       dev == FQ_DEV_VEHICLE ? "vehicles" : "energy sites");
      }
    } else if (t != dev) {
      quoted(&req->command, q, sizeof q);
      return fq_errf(err, FQ_EUNKCMD,
                     "\"devices\"[%" PRIu32 "]: command \"%s\" is %s command, not for %s",
                     it.index - 1, q, dev == FQ_DEV_VEHICLE ? "a vehicle" : "an energy-site",
                     t == FQ_DEV_VEHICLE ? "a vehicle" : "an energy site");
    }
  }
  if (rc < 0) return rc;
  req->devices_raw = s->val[K_DEVICES];
  req->devices_len = s->vlen[K_DEVICES];
  req->ndevices = count;
  if ((rc = decode_cmd_args(body, s, req, err))) return rc;
  if (s->seen & B(K_RATE)) {
    if ((rc = get_num(s, K_RATE, &req->rate, err))) return rc;
    if (!(req->rate > 0) || req->rate > FQ_WIRE_MAX_CAMPAIGN_RATE)
      return fq_errf(err, FQ_EBADREQ,
                     "\"rate\": %g is out of range: more than 0 and at most %d commands/s",
                     req->rate, FQ_WIRE_MAX_CAMPAIGN_RATE);
    req->has_rate = true;
  }
  if (s->seen & B(K_RATIO)) {
    if ((rc = get_num(s, K_RATIO, &req->max_failure_ratio, err))) return rc;
    if (req->max_failure_ratio < 0 || req->max_failure_ratio > 1)
      return fq_errf(err, FQ_EBADREQ, "\"max_failure_ratio\": %g is out of range 0..1",
                     req->max_failure_ratio);
    req->has_ratio = true;
  }
  bool has_part = s->seen & B(K_PART), has_parts = s->seen & B(K_PARTS);
  req->part = req->parts = 1;
  if (has_part != has_parts)
    return fq_errf(err, FQ_EBADREQ, "\"part\" and \"parts\": give both or neither");
  if (has_parts) {
    uint64_t u;
    if ((rc = get_uint(s, K_PARTS, 1, FQ_WIRE_MAX_CAMPAIGN_PARTS, &u, err))) return rc;
    req->parts = (uint32_t)u;
    if ((rc = get_uint(s, K_PART, 1, req->parts, &u, err))) return rc;
    req->part = (uint32_t)u;
  }
  return 0;
}

static int decode_lookup(const scan_t *s, fq_request_t *req, fq_err_t *err) {
  int rc;
  if (s->seen & B(K_TENANT)) {
    if ((rc = get_str(s, K_TENANT, true, 1, 64, &req->tenant, err))) return rc;
    if ((rc = check_tenant(&req->tenant, err))) return rc;
  }
  if (s->seen & B(K_ID)) {
    if (s->seen & B(K_KEY))
      return fq_errf(err, FQ_EBADREQ, "\"id\" and \"key\": give either \"id\" or \"tenant\" + \"key\", not both");
    if ((rc = get_str(s, K_ID, true, 1, 64, &req->id, err))) return rc;
    return check_id(&req->id, err);
  }
  if (!(s->seen & (B(K_TENANT) | B(K_KEY))))
    return fq_errf(err, FQ_EBADREQ, "\"id\" or \"tenant\" + \"key\": required");
  if (!(s->seen & B(K_TENANT))) return required(s, K_TENANT, err);
  if ((rc = get_str(s, K_KEY, true, 1, 128, &req->key, err))) return rc;
  return check_no_ctl(K_KEY, &req->key, err);
}

static int decode_history(const scan_t *s, fq_request_t *req, fq_err_t *err) {
  int rc;
  uint64_t u;
  if (!(s->seen & B(K_SHARD))) return required(s, K_SHARD, err);
  if ((rc = get_uint(s, K_SHARD, 0, UINT32_MAX, &u, err))) return rc;
  req->shard = (uint32_t)u;
  if (s->seen & B(K_AFTER)) {
    if ((rc = get_uint(s, K_AFTER, 0, UINT64_MAX, &req->after, err))) return rc;
  }
  /* With a tenant, only its events, and `after` counts its tseq. */
  if (s->seen & B(K_TENANT)) {
    if ((rc = get_str(s, K_TENANT, true, 1, 64, &req->tenant, err))) return rc;
    if ((rc = check_tenant(&req->tenant, err))) return rc;
  }
  req->limit = 100;
  if (s->seen & B(K_LIMIT)) {
    if ((rc = get_uint(s, K_LIMIT, 1, FQ_WIRE_MAX_HISTORY, &u, err))) return rc;
    req->limit = (uint32_t)u;
  }
  return 0;
}

/* usage: optional tenant, days 1..FQ_WIRE_MAX_USAGE_DAYS (default 7). */
static int decode_usage(const scan_t *s, fq_request_t *req, fq_err_t *err) {
  int rc;
  uint64_t u;
  if (s->seen & B(K_TENANT)) {
    if ((rc = get_str(s, K_TENANT, true, 1, 64, &req->tenant, err))) return rc;
    if ((rc = check_tenant(&req->tenant, err))) return rc;
  }
  req->days = 7;
  if (s->seen & B(K_DAYS)) {
    if ((rc = get_uint(s, K_DAYS, 1, FQ_WIRE_MAX_USAGE_DAYS, &u, err))) return rc;
    req->days = (uint32_t)u;
  }
  return 0;
}

int fq_wire_decode_request(const uint8_t *buf, size_t len, fq_request_t *req, fq_err_t *err) {
  scan_t s;
  char q[64];
  int rc;
  memset(req, 0, sizeof *req);
  memset(&s, 0, sizeof s);
  s.dup_key = -1;
  req->limit = 100;
  if (len > FQ_WIRE_MAX_MSG)
    return fq_errf(err, FQ_ETOOLARGE, "request body of %zu bytes, at most %d", len,
                   FQ_WIRE_MAX_MSG);
  if ((rc = scan_body(buf, len, &s, req, err))) return rc;
  /* A key that is not a (UTF-8) string is a fault of the structure: said
   * first, or a body whose keys are all binary (an encoder that writes
   * bytes) would get "op": required and hide the cause. */
  switch (s.kp) {
  case KP_NONSTR:
    return fq_errf(err, FQ_EBADREQ, "key at byte %zu: keys must be strings (got %s)", s.kp_off,
                   fq__mp_kind_name(s.kp_kind));
  case KP_BADUTF8:
    return fq_errf(err, FQ_EBADREQ, "key at byte %zu: keys must be valid UTF-8", s.kp_off);
  default:
    break;
  }

  /* The version goes first: a newer client's other keys may be unknown
   * to us, and "unsupported_version" is the useful answer then.  A nil
   * `v` is an absent one (version 1). */
  if ((s.seen & B(K_V)) && !(s.nil & B(K_V))) {
    fq__mp_obj_t o;
    val_obj(&s, K_V, &o);
    if (o.kind == FQ__MP_NINT)
      return fq_errf(err, FQ_EVERSION, "\"v\": version %" PRId64 " is not supported (this server speaks 1)",
                     o.v.i);
    if (o.kind != FQ__MP_UINT) return type_err(K_V, "integer", &o, err);
    if (o.v.u != FQ_WIRE_VERSION)
      return fq_errf(err, FQ_EVERSION, "\"v\": version %" PRIu64 " is not supported (this server speaks 1)",
                     o.v.u);
  }

  if (!(s.seen & B(K_OP))) return required(&s, K_OP, err);
  fq__mp_obj_t opv;
  val_obj(&s, K_OP, &opv);
  if (opv.kind != FQ__MP_STR) return type_err(K_OP, "string", &opv, err);
  uint32_t allowed = 0, optional = 0;
  const char *opname = "";
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (eq(opv.p, opv.len, ops[i].name, strlen(ops[i].name))) {
      req->op = ops[i].op;
      allowed = ops[i].allowed;
      optional = ops[i].optional;
      opname = ops[i].name;
    }
  if (!req->op) {
    fq__mp_quote(opv.p, opv.len, q, sizeof q);
    return fq_errf(err, FQ_EBADREQ, "unknown op \"%s\"", q);
  }

  if (s.dup_key >= 0)
    return fq_errf(err, FQ_EBADREQ, "duplicate key \"%s\"", key_names[s.dup_key]);
  /* Admin requests carry keys of their own, checked by the admin handler. */
  if (req->op != FQ_OP_ADMIN) {
    if (s.unk) {
      fq__mp_quote(s.unk, s.unk_len, q, sizeof q);
      return fq_errf(err, FQ_EBADREQ, "unknown key \"%s\"", q);
    }
    /* Even nil: a key the op does not take is a mistake worth naming. */
    uint32_t extra = s.seen & ~allowed;
    if (extra) {
      int k = __builtin_ctz(extra);
      return fq_errf(err, FQ_EBADREQ, "key \"%s\" is not allowed for op \"%s\"", key_names[k],
                     opname);
    }
  }
  /* From here on an optional key sent as nil is an absent one.  s.nil
   * keeps the fact, so that a field the request then lacks is reported as
   * "required, got nil". */
  s.seen &= ~(s.nil & (optional | B(K_V)));
  if ((s.seen & B(K_REQ)) && !req->req_raw) {
    if (s.req_len)
      return fq_errf(err, FQ_EBADREQ, "\"req\": %zu bytes encoded, at most %d", s.req_len,
                     FQ_WIRE_MAX_REQ);
    if (s.req_badutf8) return fq_errf(err, FQ_EBADREQ, "\"req\": invalid UTF-8");
    return fq_errf(err, FQ_EBADREQ,
                   "\"req\": expected a scalar (nil, bool, integer, float, string or binary), got %s",
                   fq__mp_kind_name(s.req_kind));
  }

  switch (req->op) {
  case FQ_OP_SUBMIT:
    return decode_submit(buf, &s, req, err);
  case FQ_OP_GET:
  case FQ_OP_CANCEL:
    return decode_lookup(&s, req, err);
  case FQ_OP_HISTORY:
    return decode_history(&s, req, err);
  case FQ_OP_PING:
    return 0;
  case FQ_OP_HEALTH:
    req->stuck_ms = FQ_WIRE_DEFAULT_STUCK_MS;
    if (s.seen & B(K_STUCK)) {
      uint64_t u;
      if ((rc = get_uint(&s, K_STUCK, 1, FQ_WIRE_MAX_TTL_MS, &u, err))) return rc;
      req->stuck_ms = (int64_t)u;
    }
    return 0;
  case FQ_OP_USAGE:
    return decode_usage(&s, req, err);
  case FQ_OP_CAMPAIGN:
    return decode_campaign(buf, &s, req, err);
  case FQ_OP_CAMPAIGN_GET:
  case FQ_OP_CAMPAIGN_ABORT:
    if ((rc = decode_lookup(&s, req, err))) return rc;
    if (req->key.n > FQ_WIRE_MAX_CAMPAIGN_KEY)
      return fq_errf(err, FQ_EBADREQ, "\"key\": length %zu is out of range 1..%d bytes",
                     req->key.n, FQ_WIRE_MAX_CAMPAIGN_KEY);
    return 0;
  case FQ_OP_ADMIN:
    if ((rc = get_str(&s, K_ACTION, true, 1, 64, &req->admin_action, err))) return rc;
    if ((rc = check_no_ctl(K_ACTION, &req->admin_action, err))) return rc;
    req->admin_raw = buf;
    req->admin_raw_len = len;
    return 0;
  default:
    return fq_errf(err, FQ_EINTERNAL, "op table out of sync");
  }
}

/* ---- device key and request hash ---------------------------------------- */

/* Decimal digits of v into out (no NUL); returns the count.  out must
 * have room for 20 bytes. */
static size_t u64_dec(uint64_t v, char *out) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

/* These two run for every request and event: plain copies, no printf. */
size_t fq_wire_device_key(const fq_request_t *req, char *out, size_t cap) {
  char tmp[2 + 20];
  const char *id;
  size_t n;
  if (req->vin.p) {
    id = req->vin.p;
    n = req->vin.n;
    if (n + 3 > cap) return 0;
    out[0] = 'v';
  } else {
    n = u64_dec(req->site, tmp);
    id = tmp;
    if (n + 3 > cap) return 0;
    out[0] = 's';
  }
  out[1] = ':';
  memcpy(out + 2, id, n);
  out[n + 2] = 0;
  return n + 2;
}

/* The canonical form fed to SHA-256: a domain tag, then tagged,
 * length-prefixed fields, so that no two different requests can produce
 * the same byte string (no field can absorb its neighbour's bytes). */
static int h_put(EVP_MD_CTX *c, char tag, const void *p, size_t n) {
  uint8_t hdr[5] = {(uint8_t)tag};
  fq_put_be32(hdr + 1, (uint32_t)n);
  if (!EVP_DigestUpdate(c, hdr, sizeof hdr)) return -1;
  return n && !EVP_DigestUpdate(c, p, n) ? -1 : 0;
}

static int h_put_u64(EVP_MD_CTX *c, char tag, uint64_t v) {
  uint8_t b[8];
  fq_put_be64(b, v);
  return h_put(c, tag, b, sizeof b);
}

static int pval_cmp(const fq_pval_t *a, const fq_pval_t *b) {
  size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
  int c = memcmp(a->name, b->name, n);
  if (c) return c;
  return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

static fq_ptype_t spec_type(const fq_cmd_t *cmd, const fq_pval_t *pv) {
  if (cmd)
    for (size_t i = 0; i < cmd->nparams; i++)
      if (eq((const uint8_t *)pv->name, pv->name_len, cmd->params[i].name,
             strlen(cmd->params[i].name)))
        return cmd->params[i].type;
  return pv->type;
}

/* SHA-256 fetched once per process: an explicit fetch per hash cost more
 * than the hash itself. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

int fq_wire_request_hash(const fq_request_t *req, uint8_t out[32]) {
  static const char domain[] = "fleetq.request.v1";
  pthread_once(&sha256_once, sha256_fetch);
  if (!sha256_md) {
    memset(out, 0, 32);
    return FQ_ECRYPTO;
  }
  const fq_pval_t *sorted[FQ_MAX_PARAMS];
  size_t n = req->nparams < FQ_MAX_PARAMS ? req->nparams : FQ_MAX_PARAMS;
  char dev[64];
  int rc = FQ_ECRYPTO;
  unsigned outlen = 0;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  if (!c) return -ENOMEM;

  /* Insertion sort: at most FQ_MAX_PARAMS entries. */
  for (size_t i = 0; i < n; i++) {
    size_t j = i;
    while (j > 0 && pval_cmp(sorted[j - 1], &req->params[i]) > 0) {
      sorted[j] = sorted[j - 1];
      j--;
    }
    sorted[j] = &req->params[i];
  }
  size_t devlen = fq_wire_device_key(req, dev, sizeof dev);
  const char *cname = req->cmd ? req->cmd->name : req->command.p;
  size_t clen = req->cmd ? strlen(req->cmd->name) : req->command.n;

  if (!EVP_DigestInit_ex(c, sha256_md, NULL)) goto out;
  if (h_put(c, 'V', domain, sizeof domain - 1) || h_put(c, 'A', req->account.p, req->account.n) ||
      h_put(c, 'D', dev, devlen) || h_put(c, 'C', cname, clen) || h_put_u64(c, 'N', n))
    goto out;
  /* Only when given, so that the hash of every request without it (and of
   * every command stored before it existed) stays what it was. */
  if ((req->has_not_before && h_put_u64(c, 'T', (uint64_t)req->not_before))) goto out;
  for (size_t i = 0; i < n; i++) {
    const fq_pval_t *pv = sorted[i];
    if (h_put(c, 'P', pv->name, pv->name_len)) goto out;
    int e = 0;
    switch (pv->type == FQ_PT_INT && spec_type(req->cmd, pv) == FQ_PT_FLOAT ? FQ_PT_FLOAT
                                                                            : pv->type) {
    case FQ_PT_BOOL: {
      uint8_t b = pv->v.b ? 1 : 0;
      e = h_put(c, 'b', &b, 1);
      break;
    }
    case FQ_PT_INT:
      e = h_put_u64(c, 'i', (uint64_t)pv->v.i);
      break;
    case FQ_PT_FLOAT: {
      /* Normalise: an integer sent for a number hashes as that number,
       * and -0.0 as 0.0. */
      double d = fq_pval_num(pv);
      if (d == 0) d = 0;
      uint64_t bits;
      memcpy(&bits, &d, sizeof bits);
      e = h_put_u64(c, 'f', bits);
      break;
    }
    case FQ_PT_STR:
      e = h_put(c, 's', pv->v.s.p, pv->v.s.n);
      break;
    case FQ_PT_MAP:
      /* Nested maps hash by their bytes as sent (key order included). */
      e = h_put(c, 'm', pv->v.raw.p, pv->v.raw.n);
      break;
    }
    if (e) goto out;
  }
  if (!EVP_DigestFinal_ex(c, out, &outlen) || outlen != 32) goto out;
  rc = 0;
out:
  EVP_MD_CTX_free(c);
  if (rc) memset(out, 0, 32);
  return rc;
}

/* ---- encoders ------------------------------------------------------------ */

/* msgpack-c writes through this callback straight into an fq_buf_t; the
 * first append error is kept so the caller gets FQ_ETOOLARGE / -ENOMEM and
 * not msgpack's bare -1. */
typedef struct enc {
  msgpack_packer pk;
  fq_buf_t *b;
  size_t start;
  int rc;
} enc_t;

static int enc_write(void *data, const char *p, size_t n) {
  enc_t *e = data;
  int rc = fq_buf_append(e->b, p, n);
  if (rc && !e->rc) e->rc = rc;
  return rc ? -1 : 0;
}

static void enc_init(enc_t *e, fq_buf_t *b) {
  e->b = b;
  e->start = b->len;
  e->rc = 0;
  msgpack_packer_init(&e->pk, e, enc_write);
}

/* Finish: on any failure, cut the buffer back so no half map is left. */
static int enc_done(enc_t *e, int packrc) {
  if (!e->rc && !packrc) return 0;
  e->b->len = e->start;
  return e->rc ? e->rc : FQ_EINTERNAL;
}

static int p_key(enc_t *e, const char *k) { return msgpack_pack_str_with_body(&e->pk, k, strlen(k)); }

static int p_str(enc_t *e, const char *s, size_t n) {
  return msgpack_pack_str_with_body(&e->pk, s ? s : "", s ? n : 0);
}

static int p_cstr(enc_t *e, const char *s) { return p_str(e, s, s ? strlen(s) : 0); }

static int p_raw(enc_t *e, const uint8_t *p, size_t n) { return enc_write(e, (const char *)p, n); }

static int p_req(enc_t *e, const uint8_t *req_raw, size_t len) {
  if (!req_raw) return 0;
  return p_key(e, "req") | p_raw(e, req_raw, len);
}

int fq_wire_reply_error(fq_buf_t *out, int code, const char *message, const uint8_t *req_raw,
                        size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 4 : 3);
  rc |= p_key(&e, "ok") | msgpack_pack_false(&e.pk);
  rc |= p_key(&e, "error") | p_cstr(&e, fq_wire_errname(code));
  rc |= p_key(&e, "message") | p_cstr(&e, message ? message : fq_strerror(code));
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

/* budget_exceeded carries, besides the message, when the budget resets
 * (unix ms) so that a client can wait without parsing text. */
int fq_wire_reply_budget(fq_buf_t *out, const char *message, int64_t reset_at,
                         const uint8_t *req_raw, size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 5 : 4);
  rc |= p_key(&e, "ok") | msgpack_pack_false(&e.pk);
  rc |= p_key(&e, "error") | p_cstr(&e, fq_wire_errname(FQ_EBUDGET));
  rc |= p_key(&e, "message") | p_cstr(&e, message);
  rc |= p_key(&e, "reset_at") | msgpack_pack_int64(&e.pk, reset_at);
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

int fq_wire_reply_usage(fq_buf_t *out, const fq_usage_row_t *rows, size_t n,
                        const uint8_t *req_raw, size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 3 : 2);
  rc |= p_key(&e, "ok") | msgpack_pack_true(&e.pk);
  rc |= p_key(&e, "usage") | msgpack_pack_array(&e.pk, n);
  for (size_t i = 0; i < n; i++) {
    const fq_usage_row_t *r = &rows[i];
    rc |= msgpack_pack_map(&e.pk, 5);
    rc |= p_key(&e, "date") | p_cstr(&e, r->date);
    rc |= p_key(&e, "tenant") | p_cstr(&e, r->tenant);
    rc |= p_key(&e, "account") | p_cstr(&e, r->account);
    rc |= p_key(&e, "billable") | msgpack_pack_int64(&e.pk, r->billable);
    rc |= p_key(&e, "wakeups") | msgpack_pack_int64(&e.pk, r->wakeups);
  }
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

int fq_wire_reply_submit(fq_buf_t *out, const char *id, int state, bool dup,
                         const uint8_t *req_raw, size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 5 : 4);
  rc |= p_key(&e, "ok") | msgpack_pack_true(&e.pk);
  rc |= p_key(&e, "id") | p_cstr(&e, id);
  rc |= p_key(&e, "state") | p_cstr(&e, fq_state_name(state));
  rc |= p_key(&e, "dup") | (dup ? msgpack_pack_true(&e.pk) : msgpack_pack_false(&e.pk));
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

int fq_wire_reply_ping(fq_buf_t *out, const char *version, uint32_t shards,
                       const uint8_t *req_raw, size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 4 : 3);
  rc |= p_key(&e, "ok") | msgpack_pack_true(&e.pk);
  rc |= p_key(&e, "version") | p_cstr(&e, version);
  rc |= p_key(&e, "shards") | msgpack_pack_uint32(&e.pk, shards);
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

int fq_wire_reply_history(fq_buf_t *out, const fq_str_t *events, size_t n, uint64_t next,
                          uint64_t first, const uint8_t *req_raw, size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 5 : 4);
  rc |= p_key(&e, "ok") | msgpack_pack_true(&e.pk);
  rc |= p_key(&e, "events") | msgpack_pack_array(&e.pk, n);
  for (size_t i = 0; i < n && !rc; i++)
    rc |= p_raw(&e, (const uint8_t *)events[i].p, events[i].n);
  rc |= p_key(&e, "next") | msgpack_pack_uint64(&e.pk, next);
  rc |= p_key(&e, "first") | msgpack_pack_uint64(&e.pk, first);
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

int fq_wire_reply_command(fq_buf_t *out, const uint8_t *command_map, size_t len,
                          const uint8_t *req_raw, size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 3 : 2);
  rc |= p_key(&e, "ok") | msgpack_pack_true(&e.pk);
  rc |= p_key(&e, "command") | p_raw(&e, command_map, len);
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

int fq_wire_reply_not_cancellable(fq_buf_t *out, const char *message, int state,
                                  const uint8_t *req_raw, size_t req_raw_len) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, req_raw ? 5 : 4);
  rc |= p_key(&e, "ok") | msgpack_pack_false(&e.pk);
  rc |= p_key(&e, "error") | p_cstr(&e, fq_wire_errname(FQ_ENOTCANCEL));
  rc |= p_key(&e, "message") | p_cstr(&e, message ? message : fq_strerror(FQ_ENOTCANCEL));
  rc |= p_key(&e, "state") | p_cstr(&e, fq_state_name(state));
  rc |= p_req(&e, req_raw, req_raw_len);
  return enc_done(&e, rc);
}

/* ---- events ------------------------------------------------------------- */

int fq_wire_event_pack(fq_buf_t *out, const fq_event_t *ev) {
  enc_t e;
  enc_init(&e, out);
  int rc = msgpack_pack_map(&e.pk, ev->campaign.n ? 17 : 16);
  rc |= p_key(&e, "id") | p_str(&e, ev->id.p, ev->id.n);
  rc |= p_key(&e, "tenant") | p_str(&e, ev->tenant.p, ev->tenant.n);
  rc |= p_key(&e, "key") | p_str(&e, ev->key.p, ev->key.n);
  if (ev->vin.p)
    rc |= p_key(&e, "vin") | p_str(&e, ev->vin.p, ev->vin.n);
  else
    rc |= p_key(&e, "site") | msgpack_pack_uint64(&e.pk, ev->site);
  rc |= p_key(&e, "command") | p_str(&e, ev->command.p, ev->command.n);
  rc |= p_key(&e, "state") | p_cstr(&e, fq_state_name(ev->state));
  rc |= p_key(&e, "prev");
  rc |= ev->prev >= 0 ? p_cstr(&e, fq_state_name(ev->prev)) : msgpack_pack_nil(&e.pk);
  rc |= p_key(&e, "at") | msgpack_pack_int64(&e.pk, ev->at);
  rc |= p_key(&e, "attempt") | msgpack_pack_uint32(&e.pk, ev->attempt);
  rc |= p_key(&e, "reason") | p_str(&e, ev->reason.p, ev->reason.n);
  /* Events carry the precise code ("key_not_paired", "vehicle_fault"...),
   * not the twelve-code reply vocabulary: consumers act on it. */
  rc |= p_key(&e, "error");
  rc |= ev->error ? p_cstr(&e, fq_errname(ev->error)) : msgpack_pack_nil(&e.pk);
  rc |= p_key(&e, "http");
  rc |= ev->http ? msgpack_pack_int(&e.pk, ev->http) : msgpack_pack_nil(&e.pk);
  rc |= p_key(&e, "fault");
  rc |= ev->fault >= 0 ? msgpack_pack_int(&e.pk, ev->fault) : msgpack_pack_nil(&e.pk);
  rc |= p_key(&e, "shard") | msgpack_pack_uint32(&e.pk, ev->shard);
  rc |= p_key(&e, "seq") | msgpack_pack_uint64(&e.pk, ev->seq);
  rc |= p_key(&e, "tseq") | msgpack_pack_uint64(&e.pk, ev->tseq);
  /* Only a campaign's device commands have it (issue 16). */
  if (ev->campaign.n) rc |= p_key(&e, "campaign") | p_str(&e, ev->campaign.p, ev->campaign.n);
  return enc_done(&e, rc);
}

enum ev_key {
  EK_ID, EK_TENANT, EK_KEY, EK_VIN, EK_SITE, EK_COMMAND, EK_STATE, EK_PREV, EK_AT,
  EK_ATTEMPT, EK_REASON, EK_ERROR, EK_HTTP, EK_FAULT, EK_SHARD, EK_SEQ, EK_TSEQ, EK_CAMPAIGN,
  EK_COUNT_
};

static const char *const ev_names[EK_COUNT_] = {
    "id",     "tenant", "key",   "vin",  "site",  "command", "state", "prev",
    "at",     "attempt", "reason", "error", "http", "fault",  "shard", "seq",
    "tseq",   "campaign",
};

static int ev_bad(const char *name, const char *want, const fq__mp_obj_t *o, fq_err_t *err) {
  return fq_errf(err, FQ_EPROTO, "event %s: expected %s, got %s", name, want,
                 fq__mp_kind_name(o->kind));
}

static int ev_str(const fq__mp_obj_t *o, const char *name, fq_str_t *out, fq_err_t *err) {
  if (o->kind != FQ__MP_STR) return ev_bad(name, "string", o, err);
  out->p = (const char *)o->p;
  out->n = o->len;
  return 0;
}

static int ev_uint(const fq__mp_obj_t *o, const char *name, uint64_t max, uint64_t *out,
                   fq_err_t *err) {
  if (o->kind != FQ__MP_UINT || o->v.u > max) return ev_bad(name, "unsigned integer", o, err);
  *out = o->v.u;
  return 0;
}

static int ev_int(const fq__mp_obj_t *o, const char *name, int64_t *out, fq_err_t *err) {
  if (o->kind == FQ__MP_NINT) {
    *out = o->v.i;
    return 0;
  }
  if (o->kind != FQ__MP_UINT || o->v.u > INT64_MAX) return ev_bad(name, "integer", o, err);
  *out = (int64_t)o->v.u;
  return 0;
}

static int ev_state(const fq__mp_obj_t *o, const char *name, int *out, fq_err_t *err) {
  if (o->kind != FQ__MP_STR) return ev_bad(name, "state name", o, err);
  *out = fq_state_parse((const char *)o->p, o->len);
  if (*out < 0) return fq_errf(err, FQ_EPROTO, "event %s: unknown state", name);
  return 0;
}

int fq_wire_event_unpack(const uint8_t *buf, size_t len, fq_event_t *ev, fq_err_t *err) {
  fq__mp_rd_t r;
  fq__mp_obj_t m, k, v;
  uint32_t seen = 0;
  uint64_t u = 0;
  int64_t i64 = 0;
  int rc;
  memset(ev, 0, sizeof *ev);
  ev->prev = -1;
  ev->fault = -1;
  fq__mp_rd_init(&r, buf, len);
  if ((rc = fq__mp_next(&r, &m, err))) goto proto;
  if (m.kind != FQ__MP_MAP)
    return fq_errf(err, FQ_EPROTO, "event must be a map, got %s", fq__mp_kind_name(m.kind));
  for (uint32_t i = 0; i < m.v.count; i++) {
    if ((rc = fq__mp_next(&r, &k, err))) goto proto;
    int id = -1;
    if (k.kind == FQ__MP_STR)
      for (int j = 0; j < EK_COUNT_ && id < 0; j++)
        if (eq(k.p, k.len, ev_names[j], strlen(ev_names[j]))) id = j;
    if (id < 0 || (seen & B(id))) {
      /* Newer daemons may add keys: skip what we do not know. */
      if (k.kind == FQ__MP_ARRAY || k.kind == FQ__MP_MAP)
        return fq_errf(err, FQ_EPROTO, "event key must be a string");
      if (id >= 0) return fq_errf(err, FQ_EPROTO, "event: duplicate key \"%s\"", ev_names[id]);
      if ((rc = fq__mp_skip(&r, 2, FQ_WIRE_MAX_DEPTH, err))) goto proto;
      continue;
    }
    seen |= B(id);
    if ((rc = fq__mp_next(&r, &v, err))) goto proto;
    const char *nm = ev_names[id];
    bool nil = v.kind == FQ__MP_NIL;
    switch (id) {
    case EK_ID: rc = ev_str(&v, nm, &ev->id, err); break;
    case EK_TENANT: rc = ev_str(&v, nm, &ev->tenant, err); break;
    case EK_KEY: rc = ev_str(&v, nm, &ev->key, err); break;
    case EK_VIN: rc = ev_str(&v, nm, &ev->vin, err); break;
    case EK_SITE: rc = ev_uint(&v, nm, UINT64_MAX, &ev->site, err); break;
    case EK_COMMAND: rc = ev_str(&v, nm, &ev->command, err); break;
    case EK_STATE: rc = ev_state(&v, nm, &ev->state, err); break;
    case EK_PREV: rc = nil ? 0 : ev_state(&v, nm, &ev->prev, err); break;
    case EK_AT: rc = ev_int(&v, nm, &ev->at, err); break;
    case EK_ATTEMPT:
      rc = ev_uint(&v, nm, UINT32_MAX, &u, err);
      ev->attempt = (uint32_t)u;
      break;
    case EK_REASON: rc = ev_str(&v, nm, &ev->reason, err); break;
    case EK_ERROR:
      if (nil) break;
      if (v.kind != FQ__MP_STR) {
        rc = ev_bad(nm, "string or nil", &v, err);
        break;
      } else {
        char name[48];
        size_t n = v.len < sizeof name - 1 ? v.len : sizeof name - 1;
        memcpy(name, v.p, n);
        name[n] = '\0';
        ev->error = v.len < sizeof name ? fq_errcode(name) : 0;
        if (!ev->error) ev->error = FQ_EINTERNAL;
      }
      break;
    case EK_HTTP:
    case EK_FAULT:
      if (nil) break;
      rc = ev_int(&v, nm, &i64, err);
      if (!rc && (i64 < 0 || i64 > INT32_MAX)) rc = ev_bad(nm, "small integer", &v, err);
      if (!rc) *(id == EK_HTTP ? &ev->http : &ev->fault) = (int)i64;
      break;
    case EK_SHARD:
      rc = ev_uint(&v, nm, UINT32_MAX, &u, err);
      ev->shard = (uint32_t)u;
      break;
    case EK_SEQ: rc = ev_uint(&v, nm, UINT64_MAX, &ev->seq, err); break;
    /* Optional: events stored before tseq existed have none (0). */
    case EK_TSEQ: rc = ev_uint(&v, nm, UINT64_MAX, &ev->tseq, err); break;
    case EK_CAMPAIGN: rc = nil ? 0 : ev_str(&v, nm, &ev->campaign, err); break;
    }
    if (rc) return rc;
  }
  if (r.p != r.end) return fq_errf(err, FQ_EPROTO, "trailing bytes after the event map");
  static const int need[] = {EK_ID, EK_TENANT, EK_COMMAND, EK_STATE, EK_SHARD, EK_SEQ};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
    if (!(seen & B(need[i])))
      return fq_errf(err, FQ_EPROTO, "event: %s missing", ev_names[need[i]]);
  if (!!(seen & B(EK_VIN)) == !!(seen & B(EK_SITE)))
    return fq_errf(err, FQ_EPROTO, "event: exactly one of vin or site expected");
  return 0;
proto:
  /* Reader errors are phrased for requests; an event is our own output. */
  if (err) err->code = FQ_EPROTO;
  return FQ_EPROTO;
}

size_t fq_wire_event_topic(const fq_event_t *ev, char *out, size_t cap) {
  char tmp[20];
  const char *dev = ev->vin.p;
  size_t dn = ev->vin.n, tn = ev->tenant.p ? ev->tenant.n : 0;
  if (!dev) {
    dn = u64_dec(ev->site, tmp);
    dev = tmp;
  }
  if (tn + 1 + dn + 1 > cap) return 0;
  if (tn) memcpy(out, ev->tenant.p, tn);
  out[tn] = '/';
  memcpy(out + tn + 1, dev, dn);
  out[tn + 1 + dn] = 0;
  return tn + 1 + dn;
}
