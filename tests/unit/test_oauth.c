/*
 * Unit tests of oauth.c: the refresh form body, every class of token
 * endpoint reply, and the refresh timing rule.
 */
#include <errno.h>
#include <stdlib.h>

#include "fleetq/commands.h"
#include "fq_test.h"
#include "oauth.h"
#include "util.h"

static void b64url(const char *s, char *out) {
  fq_base64url_encode((const uint8_t *)s, strlen(s), out);
}

FQ_TEST(oauth_refresh_body_is_form_encoded) {
  fq_buf_t b;
  fq_buf_init(&b, 4096);
  fq_err_t err;
  CHECK_INT(fq_oauth_refresh_body(&b, "client id&x=1", "NA_ab+c/d=e~f.g_h-i", &err), 0);
  CHECK_INT(fq_buf_append(&b, "", 1), 0);
  CHECK_STR((char *)b.data,
            "grant_type=refresh_token&client_id=client%20id%26x%3D1"
            "&refresh_token=NA_ab%2Bc%2Fd%3De~f.g_h-i");
  fq_oauth_wipe_buf(&b);
  CHECK(b.data == NULL);
  fq_buf_init(&b, 4096);
  CHECK_INT(fq_oauth_refresh_body(&b, "", "r", &err), FQ_EBADPARAM);
  CHECK_INT(fq_oauth_refresh_body(&b, "c", NULL, &err), FQ_EBADPARAM);
  fq_buf_free(&b);
  /* The cap of the caller's buffer holds. */
  fq_buf_init(&b, 16);
  CHECK_INT(fq_oauth_refresh_body(&b, "c", "r", &err), FQ_ETOOLARGE);
  fq_buf_free(&b);
}

FQ_TEST(oauth_token_urls) {
  CHECK_STR(fq_oauth_token_url("na"), "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/token");
  CHECK_STR(fq_oauth_token_url("eu"), "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/token");
  CHECK_STR(fq_oauth_token_url("cn"), "https://auth.tesla.cn/oauth2/v3/token");
  CHECK(fq_oauth_token_url("xx") == NULL);
}

FQ_TEST(oauth_ok_reply_with_jwt) {
  char p[512], tok[1024], body[2048];
  b64url("{\"exp\":1800000000,\"scp\":[\"vehicle_cmds\",\"offline_access\"]}", p);
  snprintf(tok, sizeof tok, "eyJhbGciOiJSUzI1NiJ9.%s.sig", p);
  snprintf(body, sizeof body,
           "{\"access_token\":\"%s\",\"refresh_token\":\"NA_new\",\"expires_in\":28800,"
           "\"token_type\":\"Bearer\"}", tok);
  fq_oauth_result_t *r = malloc(sizeof *r);
  CHECK_INT(fq_oauth_parse_response(200, (const uint8_t *)body, strlen(body), NULL, 1000, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_OK);
  CHECK_STR(r->access_token, tok);
  CHECK_STR(r->refresh_token, "NA_new");
  CHECK_INT(r->expires_in, 28800);
  CHECK_INT(r->access_exp, 1800000000); /* the JWT's exp wins */
  CHECK_INT(r->scopes, FQ_SCOPE_VEHICLE_CMDS);
  fq_oauth_result_wipe(r);
  CHECK_STR(r->access_token, "");
  free(r);
}

FQ_TEST(oauth_ok_reply_opaque_token) {
  const char *body = "{\"access_token\":\"opaque\",\"expires_in\":600,"
                     "\"scope\":\"openid energy_cmds\"}";
  fq_oauth_result_t *r = malloc(sizeof *r);
  CHECK_INT(fq_oauth_parse_response(200, (const uint8_t *)body, strlen(body), NULL, 1000, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_OK);
  CHECK_STR(r->refresh_token, ""); /* none: keep the old one */
  CHECK_INT(r->access_exp, 1600);
  CHECK_INT(r->scopes, FQ_SCOPE_ENERGY_CMDS);
  free(r);
}

FQ_TEST(oauth_error_classes) {
  fq_oauth_result_t *r = malloc(sizeof *r);
  const char *b = "{\"error\":\"login_required\",\"error_description\":\"The refresh token is invalid\"}";
  CHECK_INT(fq_oauth_parse_response(401, (const uint8_t *)b, strlen(b), NULL, 0, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_REJECTED);
  CHECK_STR(r->error, "login_required");
  CHECK_STR(r->reason, "refresh token rejected (HTTP 401 login_required: The refresh token is "
                       "invalid): connect the account again with 'fleetq account add'");
  b = "{\"error\":\"invalid_grant\"}";
  CHECK_INT(fq_oauth_parse_response(400, (const uint8_t *)b, strlen(b), NULL, 0, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_REJECTED);
  CHECK_INT(fq_oauth_parse_response(429, NULL, 0, "120", 0, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_RETRY);
  CHECK_INT(r->retry_after_s, 120);
  /* Retry-After as an HTTP date: read (it was ignored), and capped at a
   * week like a number of seconds is. */
  CHECK_INT(fq_oauth_parse_response(429, NULL, 0, "Sun, 06 Nov 1994 09:49:37 GMT",
                                    784111777, r), 0);
  CHECK_INT(r->retry_after_s, 3600);
  CHECK_INT(fq_oauth_parse_response(429, NULL, 0, "Thu, 31 Dec 2099 23:59:59 GMT",
                                    784111777, r), 0);
  CHECK_INT(r->retry_after_s, 86400 * 7);
  CHECK_INT(fq_oauth_parse_response(429, NULL, 0, "99999999999", 0, r), 0);
  CHECK_INT(r->retry_after_s, 86400 * 7);
  CHECK_INT(fq_oauth_parse_response(503, (const uint8_t *)"<html>", 6, NULL, 0, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_RETRY);
  CHECK_INT(r->retry_after_s, 15);
  /* 200 without a token: the old refresh token may be spent. */
  b = "{\"refresh_token\":\"x\"}";
  CHECK_INT(fq_oauth_parse_response(200, (const uint8_t *)b, strlen(b), NULL, 0, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_UNREADABLE);
  CHECK_INT(fq_oauth_parse_response(200, (const uint8_t *)"not json", 8, NULL, 0, r), 0);
  CHECK_INT(r->status, FQ_OAUTH_UNREADABLE);
  /* Control characters in a remote error string do not pass through. */
  b = "{\"error\":\"bad\\u001b[31m\"}";
  CHECK_INT(fq_oauth_parse_response(400, (const uint8_t *)b, strlen(b), NULL, 0, r), 0);
  CHECK_STR(r->error, "bad?[31m");
  CHECK_INT(fq_oauth_parse_response(200, NULL, 0, NULL, 0, NULL), -EINVAL);
  free(r);
}

FQ_TEST(oauth_refresh_timing) {
  CHECK(!fq_oauth_needs_refresh(1000, 0));
  CHECK(!fq_oauth_needs_refresh(1000, 1301));
  CHECK(fq_oauth_needs_refresh(1001, 1301));
  CHECK(fq_oauth_needs_refresh(2000, 1301));
  CHECK_INT(fq_oauth_refresh_at(1301), 1001);
  CHECK_INT(fq_oauth_refresh_at(0), 0);
}
