/*
 * fleetsim accounts: bearer-token checks (unknown, expired), the OAuth
 * token endpoint with single-use, rotated refresh tokens and JWT-shaped
 * access tokens (header.payload.signature, base64url, claims scp / exp /
 * aud / sub), and scope checks that use fleetq's own command table so the
 * simulator refuses exactly what Tesla's rules (as fleetq models them)
 * refuse.
 */
#include <errno.h>
#include <inttypes.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/commands.h"
#include "sim_int.h"
#include "util.h"

/* Issued access tokens kept valid per account; older ones are forgotten
 * (and then answer 401 like any unknown token). */
#define MAX_ISSUED 16

int fq__sim_token_add(fq__sim_world_t *w, const char *token, size_t ai, uint32_t gen,
                      int64_t exp_ms) {
  fq__sim_token_t *t = calloc(1, sizeof *t);
  if (!t) return -ENOMEM;
  t->acct = ai;
  t->gen = gen;
  t->exp_ms = exp_ms;
  free(fq__sim_map_get(&w->tok_map, token, strlen(token)));
  if (fq__sim_map_put(&w->tok_map, token, t)) {
    free(t);
    return -ENOMEM;
  }
  return 0;
}

int fq__sim_auth(fq__sim_world_t *w, const char *token, fq__sim_account_t **acct) {
  *acct = NULL;
  fq__sim_token_t *t = fq__sim_map_get(&w->tok_map, token, strlen(token));
  if (!t) return FQ_EAUTH;
  fq__sim_account_t *a = &w->accounts[t->acct];
  *acct = a;
  if (t->gen < a->min_gen) return FQ_EEXPIRED;
  if (t->exp_ms && fq_now_ms() >= t->exp_ms) return FQ_EEXPIRED;
  return 0;
}

bool fq__sim_account_has_vehicle(const fq__sim_account_t *a, const fq__sim_vehicle_t *v,
                                 size_t ai) {
  (void)a;
  for (size_t i = 0; i < v->naccounts; i++)
    if (v->accounts[i] == ai) return true;
  return false;
}

bool fq__sim_account_has_site(const fq__sim_account_t *a, uint64_t site) {
  for (size_t i = 0; i < a->nsites; i++)
    if (a->sites[i] == site) return true;
  return false;
}

bool fq__sim_scope_ok(const fq__sim_account_t *a, const char *cmd, int devtype,
                      unsigned fallback) {
  const fq_cmd_t *c = cmd ? fq_cmd_find(cmd, strlen(cmd), (fq_devtype_t)devtype, NULL) : NULL;
  if (!c && cmd && devtype == FQ_DEV_SITE) {
    /* Energy endpoints may be named by their REST suffix in the table. */
    for (size_t i = 0; i < fq_cmd_count(); i++) {
      const fq_cmd_t *x = fq_cmd_at(i);
      if (x->dev == FQ_DEV_SITE && x->rest_suffix && strcmp(x->rest_suffix, cmd) == 0) {
        c = x;
        break;
      }
    }
  }
  if (c) return fq_cmd_allowed(c, a->scopes);
  return (a->scopes & fallback) != 0;
}

/* ---- JWT-shaped tokens ------------------------------------------------------- */

/* Append the base64url of p (nothing when the buffer cannot hold it:
 * tokens stay far below FQ__SIM_MAX_TOKEN). */
static void b64url(const uint8_t *p, size_t n, fq_buf_t *out) {
  if (fq_buf_reserve(out, 4 * ((n + 2) / 3) + 1)) return;
  out->len += fq_base64url_encode(p, n, (char *)out->data + out->len);
}

static char *make_jwt(fq__sim_world_t *w, const fq__sim_account_t *a, int64_t now_s) {
  const char *aud = json_string_value(json_object_get(w->base_urls, a->region));
  char ou[8];
  size_t i = 0;
  for (; a->region[i] && i + 1 < sizeof ou; i++)
    ou[i] = (char)(a->region[i] >= 'a' && a->region[i] <= 'z' ? a->region[i] - 32 : a->region[i]);
  ou[i] = 0;
  json_t *payload = json_pack("{s:s, s:s, s:[s,s], s:O, s:I, s:I, s:s, s:s}", "iss",
                              "https://auth.tesla.com/oauth2/v3/nts", "sub", a->id, "aud",
                              aud ? aud : "https://fleet-api.prd.na.vn.cloud.tesla.com",
                              "https://auth.tesla.com/oauth2/v3/userinfo", "scp", a->scope_names,
                              "iat", (json_int_t)now_s, "exp",
                              (json_int_t)(now_s + a->expires_in_s), "ou_code", ou, "azp",
                              "fleetsim");
  char *pj = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
  json_decref(payload);
  if (!pj) return NULL;
  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  fq_buf_t b;
  fq_buf_init(&b, FQ__SIM_MAX_TOKEN - 1);
  b64url((const uint8_t *)header, sizeof header - 1, &b);
  fq_buf_append(&b, ".", 1);
  b64url((const uint8_t *)pj, strlen(pj), &b);
  free(pj);
  uint8_t mac[32];
  unsigned mlen = 0;
  HMAC(EVP_sha256(), w->jwt_key, sizeof w->jwt_key, b.data, b.len, mac, &mlen);
  fq_buf_append(&b, ".", 1);
  b64url(mac, mlen, &b);
  if (fq_buf_append(&b, "", 1)) {
    fq_buf_free(&b);
    return NULL;
  }
  return (char *)b.data;
}

/* ---- the token endpoint ------------------------------------------------------ */

/* Find key in an x-www-form-urlencoded body and percent-decode its value
 * into out.  Returns the length, or -1 when absent or too long. */
static long form_get(const char *form, size_t len, const char *key, char *out, size_t cap) {
  size_t klen = strlen(key), i = 0;
  while (i < len) {
    size_t end = i;
    while (end < len && form[end] != '&') end++;
    if (end - i > klen && memcmp(form + i, key, klen) == 0 && form[i + klen] == '=') {
      size_t o = 0;
      for (size_t j = i + klen + 1; j < end; j++) {
        if (o + 1 >= cap) return -1;
        char c = form[j];
        if (c == '+') c = ' ';
        else if (c == '%') {
          uint8_t v;
          if (j + 2 >= end) return -1;
          char hx[3] = {form[j + 1], form[j + 2], 0};
          if (fq_hex_decode(hx, &v, 1) != 1) return -1;
          c = (char)v;
          j += 2;
        }
        out[o++] = c;
      }
      out[o] = 0;
      return (long)o;
    }
    i = end + 1;
  }
  return -1;
}

static void oauth_error(fq_buf_t *out, const char *error, const char *desc) {
  json_t *j = json_pack("{s:s, s:s}", "error", error, "error_description", desc);
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  if (s) fq_buf_append_str(out, s);
  free(s);
  json_decref(j);
}

int fq__sim_oauth_token(fq__sim_world_t *w, const char *form, size_t len, int *status,
                        fq_buf_t *out) {
  char grant[64], refresh[FQ__SIM_MAX_TOKEN];
  if (form_get(form, len, "grant_type", grant, sizeof grant) < 0) {
    *status = 400;
    oauth_error(out, "invalid_request", "grant_type is required");
    return 0;
  }
  if (strcmp(grant, "refresh_token") != 0) {
    *status = 400;
    oauth_error(out, "unsupported_grant_type", "fleetsim supports grant_type=refresh_token");
    return 0;
  }
  if (form_get(form, len, "refresh_token", refresh, sizeof refresh) <= 0) {
    *status = 400;
    oauth_error(out, "invalid_request", "refresh_token is required");
    return 0;
  }
  fq__sim_account_t *a = fq__sim_map_get(&w->ref_map, refresh, strlen(refresh));
  if (!a) {
    /* Tesla answers a used or revoked refresh token with login_required. */
    *status = 401;
    oauth_error(out, "login_required", "The refresh_token is invalid or was already used");
    return 0;
  }
  size_t ai = (size_t)(a - w->accounts);
  int64_t now_s = fq_now_ms() / 1000;
  char *access = make_jwt(w, a, now_s);
  uint8_t rnd[12];
  char rhex[25], nref[96];
  if (!access || RAND_bytes(rnd, sizeof rnd) != 1) {
    free(access);
    *status = 500;
    oauth_error(out, "server_error", "token generation failed");
    return 0;
  }
  fq_hex_encode(rnd, sizeof rnd, rhex);
  char up[8];
  size_t i = 0;
  for (; a->region[i] && i + 1 < sizeof up; i++)
    up[i] = (char)(a->region[i] >= 'a' && a->region[i] <= 'z' ? a->region[i] - 32 : a->region[i]);
  up[i] = 0;
  snprintf(nref, sizeof nref, "%s_sim%" PRIu32 "%s", up, ++a->refresh_seq, rhex);
  /* Rotate: the old refresh token is dead from now on. */
  fq__sim_map_del(&w->ref_map, a->refresh);
  free(a->refresh);
  a->refresh = strdup(nref);
  int rc = a->refresh ? fq__sim_map_put(&w->ref_map, a->refresh, a) : -ENOMEM;
  if (!rc) rc = fq__sim_token_add(w, access, ai, a->gen++, (now_s + a->expires_in_s) * 1000);
  if (!rc && a->nissued == MAX_ISSUED) {
    free(fq__sim_map_get(&w->tok_map, a->issued[0], strlen(a->issued[0])));
    fq__sim_map_del(&w->tok_map, a->issued[0]);
    free(a->issued[0]);
    memmove(a->issued, a->issued + 1, (MAX_ISSUED - 1) * sizeof *a->issued);
    a->nissued--;
  }
  if (!rc) {
    char **p = realloc(a->issued, (a->nissued + 1) * sizeof *p);
    if (!p) rc = -ENOMEM;
    else {
      a->issued = p;
      a->issued[a->nissued++] = access;
      access = NULL;
    }
  }
  if (rc) {
    free(access);
    *status = 500;
    oauth_error(out, "server_error", "out of memory");
    return 0;
  }
  const char *tok = a->issued[a->nissued - 1];
  json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:s}", "access_token", tok, "refresh_token",
                        a->refresh, "id_token", tok, "expires_in", (json_int_t)a->expires_in_s,
                        "token_type", "Bearer");
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) {
    *status = 500;
    return 0;
  }
  *status = 200;
  fq_buf_append_str(out, s);
  free(s);
  return 0;
}
