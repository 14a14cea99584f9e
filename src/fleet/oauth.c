/*
 * OAuth refresh request and response handling; see oauth.h for the flow.
 */
#include "oauth.h"
#include "ratelimit.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/commands.h"

const char *fq_oauth_token_url(const char *region) {
  if (!region) return NULL;
  if (strcmp(region, "na") == 0 || strcmp(region, "eu") == 0)
    return "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/token";
  if (strcmp(region, "cn") == 0) return "https://auth.tesla.cn/oauth2/v3/token";
  return NULL;
}

static int append_encoded(fq_buf_t *out, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    int rc;
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
        c == '-' || c == '.' || c == '_' || c == '~') {
      rc = fq_buf_append(out, p, 1);
    } else {
      char enc[3] = {'%', hex[c >> 4], hex[c & 15]};
      rc = fq_buf_append(out, enc, 3);
    }
    if (rc) return rc;
  }
  return 0;
}

int fq_oauth_refresh_body(fq_buf_t *out, const char *client_id, const char *refresh_token,
                          fq_err_t *err) {
  int rc;
  if (!client_id || !client_id[0] || strlen(client_id) > 256)
    return fq_errf(err, FQ_EBADPARAM, "client id missing or longer than 256 bytes");
  if (!refresh_token || !refresh_token[0] || strlen(refresh_token) > FQ_TOKEN_MAX)
    return fq_errf(err, FQ_EBADPARAM, "refresh token missing or longer than %d bytes",
                   FQ_TOKEN_MAX);
  if ((rc = fq_buf_append_str(out, "grant_type=refresh_token&client_id=")) ||
      (rc = append_encoded(out, client_id)) ||
      (rc = fq_buf_append_str(out, "&refresh_token=")) ||
      (rc = append_encoded(out, refresh_token)))
    return fq_errf(err, rc, "refresh request body: %s", fq_strerror(rc));
  return 0;
}

void fq_oauth_wipe_buf(fq_buf_t *b) {
  if (b->data) OPENSSL_cleanse(b->data, b->alloc);
  fq_buf_free(b);
}

void fq_oauth_result_wipe(fq_oauth_result_t *r) { OPENSSL_cleanse(r, sizeof *r); }

/* Printable ASCII only, bounded: error strings come from the network and
 * end up in status events. */
static void copy_clean(char *out, size_t cap, const char *s) {
  size_t k = 0;
  for (; s && *s && k + 1 < cap; s++) out[k++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
  out[k] = 0;
}

/* A token endpoint's Retry-After in seconds, delta seconds or an HTTP
 * date alike, capped at a week; dflt when absent or unreadable. */
static int64_t parse_secs(const char *v, int64_t now_s, int64_t dflt) {
  if (!v || !*v) return dflt;
  int64_t ms = fq_rl_retry_after_ms(v, now_s * 1000, (int64_t)86400 * 7 * 1000);
  return ms < 0 ? dflt : (ms + 999) / 1000;
}

int fq_oauth_parse_response(long status, const uint8_t *body, size_t len, const char *retry_after,
                            int64_t now_s, fq_oauth_result_t *out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  json_t *root = NULL;
  if (body && len) root = json_loadb((const char *)body, len, 0, NULL);
  if (root && !json_is_object(root)) {
    json_decref(root);
    root = NULL;
  }
  const char *e = root ? json_string_value(json_object_get(root, "error")) : NULL;
  const char *ed = root ? json_string_value(json_object_get(root, "error_description")) : NULL;
  copy_clean(out->error, sizeof out->error, e);
  char desc[160];
  copy_clean(desc, sizeof desc, ed);

  if (status == 200) {
    json_t *at = root ? json_object_get(root, "access_token") : NULL;
    json_t *rt = root ? json_object_get(root, "refresh_token") : NULL;
    json_t *ei = root ? json_object_get(root, "expires_in") : NULL;
    if (!json_is_string(at) || json_string_length(at) == 0 ||
        json_string_length(at) > FQ_TOKEN_MAX || (rt && !json_is_string(rt)) ||
        (rt && json_string_length(rt) > FQ_TOKEN_MAX)) {
      out->status = FQ_OAUTH_UNREADABLE;
      snprintf(out->reason, sizeof out->reason,
               "token endpoint answered 200 without a usable access_token; the refresh token "
               "may be spent: if the next refresh is rejected, connect the account again");
      goto done;
    }
    memcpy(out->access_token, json_string_value(at), json_string_length(at) + 1);
    if (rt) memcpy(out->refresh_token, json_string_value(rt), json_string_length(rt) + 1);
    if (json_is_integer(ei) && json_integer_value(ei) > 0)
      out->expires_in = (int64_t)json_integer_value(ei);
    fq_jwt_claims_t c;
    if (fq_jwt_decode(out->access_token, strlen(out->access_token), &c, NULL) == 0) {
      out->access_exp = c.exp;
      out->scopes = c.scopes;
    }
    if (!out->access_exp && out->expires_in) out->access_exp = now_s + out->expires_in;
    if (!out->scopes) {
      const char *sc = json_string_value(json_object_get(root, "scope"));
      if (sc) out->scopes = fq_jwt_scope_words(sc);
    }
    out->status = FQ_OAUTH_OK;
    snprintf(out->reason, sizeof out->reason, "access token refreshed");
    goto done;
  }
  if (status == 429 || status >= 500 || status == 0) {
    out->status = FQ_OAUTH_RETRY;
    out->retry_after_s = parse_secs(retry_after, now_s, status == 429 ? 60 : 15);
    snprintf(out->reason, sizeof out->reason,
             "token endpoint unavailable (HTTP %ld); retrying the refresh in %lld s", status,
             (long long)out->retry_after_s);
    goto done;
  }
  out->status = FQ_OAUTH_REJECTED;
  snprintf(out->reason, sizeof out->reason,
           "refresh token rejected (HTTP %ld%s%s%s%s): connect the account again with "
           "'fleetq account add'",
           status, out->error[0] ? " " : "", out->error, desc[0] ? ": " : "", desc);
done:
  json_decref(root);
  return 0;
}

bool fq_oauth_needs_refresh(int64_t now_s, int64_t exp_s) {
  return exp_s != 0 && now_s >= exp_s - FQ_OAUTH_REFRESH_MARGIN_S;
}

int64_t fq_oauth_refresh_at(int64_t exp_s) { return exp_s ? exp_s - FQ_OAUTH_REFRESH_MARGIN_S : 0; }
