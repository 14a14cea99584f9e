/*
 * JWT payload decoding for access tokens: base64url, then jansson over a
 * bounded buffer.  See jwt.h.
 */
#include "jwt.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/commands.h"
#include "util.h"

/* Scope names are matched by the command table's fq_scope_parse(), so the
 * token's scopes and the commands' requirements use one list of names. */
unsigned fq_jwt_scope_words(const char *s) { return fq_scope_parse(s); }

static int get_int(json_t *o, const char *key, int64_t *v, fq_err_t *err) {
  json_t *j = json_object_get(o, key);
  *v = 0;
  if (!j || json_is_null(j)) return 0;
  if (json_is_integer(j)) {
    *v = (int64_t)json_integer_value(j);
    return 0;
  }
  if (json_is_real(j)) { /* some issuers write 1.7e9 */
    double d = json_real_value(j);
    if (d < 0 || d > 9.2e18) return fq_errf(err, FQ_EBADPARAM, "token claim %s out of range", key);
    *v = (int64_t)d;
    return 0;
  }
  return fq_errf(err, FQ_EBADPARAM, "token claim %s is not a number", key);
}

/* Copy a JSON string with control and non-ASCII bytes replaced by '?':
 * claims end up in logs and replies, where they must not carry escape
 * sequences. */
static void copy_clean(char *out, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  out[n] = 0;
}

static int get_str(json_t *o, const char *key, char *out, size_t cap, fq_err_t *err) {
  json_t *j = json_object_get(o, key);
  out[0] = 0;
  if (!j || json_is_null(j)) return 0;
  if (!json_is_string(j)) return fq_errf(err, FQ_EBADPARAM, "token claim %s is not a string", key);
  if (json_string_length(j) >= cap)
    return fq_errf(err, FQ_EBADPARAM, "token claim %s longer than %zu bytes", key, cap - 1);
  copy_clean(out, json_string_value(j), json_string_length(j));
  return 0;
}

int fq_jwt_decode(const char *token, size_t len, fq_jwt_claims_t *out, fq_err_t *err) {
  int rc = 0;
  uint8_t *payload = NULL;
  json_t *root = NULL;
  memset(out, 0, sizeof *out);
  if (len > FQ_JWT_MAX)
    return fq_errf(err, FQ_ETOOLARGE, "access token longer than %d bytes", FQ_JWT_MAX);
  const char *dot1 = memchr(token, '.', len);
  const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
  if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
    return fq_errf(err, FQ_EBADPARAM, "access token is not a JWT (expected three dot-separated parts)");
  size_t plen = (size_t)(dot2 - dot1 - 1);
  size_t cap = plen / 4 * 3 + 3;
  payload = malloc(cap + 1);
  if (!payload) return fq_errf(err, -ENOMEM, "out of memory");
  long n = fq_base64url_decode(dot1 + 1, plen, payload, cap);
  if (n < 0) {
    rc = fq_errf(err, FQ_EBADPARAM, "access token payload is not base64url");
    goto out;
  }
  json_error_t je;
  root = json_loadb((const char *)payload, (size_t)n, JSON_REJECT_DUPLICATES, &je);
  if (!root || !json_is_object(root)) {
    rc = fq_errf(err, FQ_EBADPARAM, "access token payload is not a JSON object");
    goto out;
  }
  if ((rc = get_int(root, "exp", &out->exp, err)) != 0) goto out;
  if ((rc = get_int(root, "iat", &out->iat, err)) != 0) goto out;
  if ((rc = get_str(root, "sub", out->sub, sizeof out->sub, err)) != 0) goto out;
  if ((rc = get_str(root, "ou_code", out->ou_code, sizeof out->ou_code, err)) != 0) goto out;

  json_t *scp = json_object_get(root, "scp");
  if (json_is_string(scp)) {
    out->scopes = fq_jwt_scope_words(json_string_value(scp));
  } else if (json_is_array(scp)) {
    size_t i;
    json_t *v;
    json_array_foreach(scp, i, v) {
      if (!json_is_string(v)) {
        rc = fq_errf(err, FQ_EBADPARAM, "token claim scp[%zu] is not a string", i);
        goto out;
      }
      out->scopes |= fq_scope_parse(json_string_value(v));
    }
  } else if (scp && !json_is_null(scp)) {
    rc = fq_errf(err, FQ_EBADPARAM, "token claim scp is neither a string nor an array");
    goto out;
  }

  json_t *aud = json_object_get(root, "aud");
  if (json_is_string(aud)) {
    if (json_string_length(aud) < FQ_JWT_STR_MAX) {
      copy_clean(out->aud[0], json_string_value(aud), json_string_length(aud));
      out->naud = 1;
    }
  } else if (json_is_array(aud)) {
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) {
      if (!json_is_string(v)) {
        rc = fq_errf(err, FQ_EBADPARAM, "token claim aud[%zu] is not a string", i);
        goto out;
      }
      /* Over-long or surplus audiences are skipped, not fatal: only the
       * fleet-api ones matter and they are short. */
      if (out->naud < FQ_JWT_MAX_AUD && json_string_length(v) < FQ_JWT_STR_MAX) {
        copy_clean(out->aud[out->naud], json_string_value(v), json_string_length(v));
        out->naud++;
      }
    }
  } else if (aud && !json_is_null(aud)) {
    rc = fq_errf(err, FQ_EBADPARAM, "token claim aud is neither a string nor an array");
    goto out;
  }
out:
  json_decref(root);
  if (payload) {
    memset(payload, 0, cap + 1);
    free(payload);
  }
  if (rc) {
    fq_err_t keep = err ? *err : (fq_err_t){0};
    memset(out, 0, sizeof *out);
    if (err) *err = keep;
  }
  return rc;
}

static bool ends_with(const char *s, size_t n, const char *suf) {
  size_t m = strlen(suf);
  return n >= m && memcmp(s + n - m, suf, m) == 0;
}

static bool host_name_ok(const char *h, size_t n) {
  if (n == 0 || n > 253 || h[0] == '.' || h[n - 1] == '.') return false;
  for (size_t i = 0; i < n; i++) {
    char ch = h[i];
    if (!(isalnum((unsigned char)ch) || ch == '-' || ch == '.')) return false;
    if (ch == '.' && h[i - 1] == '.') return false;
  }
  return true;
}

int fq_jwt_fleet_base_url(const fq_jwt_claims_t *c, char *out, size_t cap) {
  char want[24] = "";
  const char *best = NULL;
  size_t best_len = 0;
  if (c->ou_code[0]) {
    size_t k = 0;
    want[k++] = '.';
    for (const char *p = c->ou_code; *p && k < sizeof want - 2; p++)
      want[k++] = (char)tolower((unsigned char)*p);
    want[k++] = '.';
    want[k] = 0;
  }
  for (size_t i = 0; i < c->naud; i++) {
    const char *a = c->aud[i];
    if (strncmp(a, "https://", 8) == 0) a += 8;
    size_t n = strcspn(a, "/");
    if (n < 10 || strncmp(a, "fleet-api.", 10) != 0) continue;
    /* A host name only: letters, digits, '-' and non-empty labels.  A
     * claim like "fleet-api.pr`.na.vn.cloud.tesla.com" is not a host the
     * requests may go to, so it must not become the account's base URL
     * (found by fuzz_fleet in the soak). */
    if (!host_name_ok(a, n)) continue;
    if (!ends_with(a, n, ".tesla.com") && !ends_with(a, n, ".tesla.cn") &&
        !ends_with(a, n, ".teslamotors.com"))
      continue;
    bool has_ou = want[0] && memmem(a, n, want, strlen(want)) != NULL;
    if (!best || has_ou) {
      best = a;
      best_len = n;
      if (has_ou) break;
    }
  }
  if (!best) return FQ_ENOTFOUND;
  if (8 + best_len + 1 > cap) return FQ_ETOOLARGE;
  memcpy(out, "https://", 8);
  memcpy(out + 8, best, best_len);
  out[8 + best_len] = 0;
  return 0;
}
