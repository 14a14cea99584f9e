/*
 * Unit tests of jwt.c with crafted tokens: scope claim as array and as
 * string, audiences, expiry, region host choice, and malformed tokens.
 */
#include <stdlib.h>

#include "fleetq/commands.h"
#include "fq_test.h"
#include "jwt.h"
#include "util.h"

/* base64url without padding of s. */
static void b64url(const char *s, char *out) {
  fq_base64url_encode((const uint8_t *)s, strlen(s), out);
}

/* A token "header.payload.signature" around a JSON payload. */
static char *make_token(const char *payload) {
  static char tok[8192];
  char h[128], p[6000];
  b64url("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", h);
  b64url(payload, p);
  snprintf(tok, sizeof tok, "%s.%s.c2lnbmF0dXJl", h, p);
  return tok;
}

FQ_TEST(jwt_scopes_as_array_and_claims) {
  const char *t = make_token(
      "{\"iss\":\"https://auth.tesla.com/oauth2/v3/nts\",\"sub\":\"abc-123\","
      "\"scp\":[\"openid\",\"offline_access\",\"vehicle_cmds\",\"energy_device_data\",\"x\"],"
      "\"aud\":[\"https://fleet-api.prd.na.vn.cloud.tesla.com\","
      "\"https://fleet-api.prd.eu.vn.cloud.tesla.com\",\"https://auth.tesla.com/oauth2/v3/userinfo\"],"
      "\"exp\":1764400000,\"iat\":1764371200,\"ou_code\":\"EU\"}");
  fq_jwt_claims_t c;
  fq_err_t err;
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), 0);
  CHECK_INT(c.scopes, FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_ENERGY_DEVICE_DATA);
  CHECK_INT(c.exp, 1764400000);
  CHECK_INT(c.iat, 1764371200);
  CHECK_STR(c.sub, "abc-123");
  CHECK_STR(c.ou_code, "EU");
  CHECK_INT(c.naud, 3);
  CHECK_STR(c.aud[2], "https://auth.tesla.com/oauth2/v3/userinfo");
  char url[256];
  CHECK_INT(fq_jwt_fleet_base_url(&c, url, sizeof url), 0);
  CHECK_STR(url, "https://fleet-api.prd.eu.vn.cloud.tesla.com");
  CHECK_INT(fq_jwt_fleet_base_url(&c, url, 20), FQ_ETOOLARGE);
}

FQ_TEST(jwt_scopes_as_string_and_aud_string) {
  const char *t = make_token(
      "{\"scp\":\"openid vehicle_charging_cmds energy_cmds vehicle_device_data\","
      "\"aud\":\"fleet-api.prd.cn.vn.cloud.tesla.cn\",\"exp\":1.7644e9}");
  fq_jwt_claims_t c;
  fq_err_t err;
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), 0);
  CHECK_INT(c.scopes, FQ_SCOPE_VEHICLE_CHARGING_CMDS | FQ_SCOPE_ENERGY_CMDS |
                          FQ_SCOPE_VEHICLE_DEVICE_DATA);
  CHECK_INT(c.exp, 1764400000);
  CHECK_INT(c.naud, 1);
  CHECK_STR(c.sub, "");
  char url[256];
  /* No ou_code: the first fleet-api audience. */
  CHECK_INT(fq_jwt_fleet_base_url(&c, url, sizeof url), 0);
  CHECK_STR(url, "https://fleet-api.prd.cn.vn.cloud.tesla.cn");
}

FQ_TEST(jwt_fleet_host_must_be_tesla) {
  const char *t = make_token(
      "{\"aud\":[\"https://fleet-api.evil.example\",\"https://fleet-api.tesla.com.evil.io\","
      "\"https://notfleet.prd.na.vn.cloud.tesla.com\"],\"ou_code\":\"NA\"}");
  fq_jwt_claims_t c;
  fq_err_t err;
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), 0);
  char url[256];
  CHECK_INT(fq_jwt_fleet_base_url(&c, url, sizeof url), FQ_ENOTFOUND);
  CHECK_INT(c.scopes, 0);
  CHECK_INT(c.exp, 0);
}

FQ_TEST(jwt_fleet_host_must_be_a_host_name) {
  /* Found by fuzz_fleet in the soak: a byte that no host name has, an
   * empty label, a port or user part: none may become the base URL; the
   * well-formed audience after them is taken. */
  const char *t = make_token(
      "{\"aud\":[\"https://fleet-api.pr`.na.vn.cloud.tesla.com\","
      "\"https://fleet-api..na.vn.cloud.tesla.com\",\"https://fleet-api.x:443@y.tesla.com\","
      "\"https://fleet-api.prd.eu.vn.cloud.tesla.com\"]}");
  fq_jwt_claims_t c;
  fq_err_t err;
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), 0);
  CHECK_INT(c.naud, 4);
  char url[256];
  CHECK_INT(fq_jwt_fleet_base_url(&c, url, sizeof url), 0);
  CHECK_STR(url, "https://fleet-api.prd.eu.vn.cloud.tesla.com");
  t = make_token("{\"aud\":\"https://fleet-api.pr`.na.vn.cloud.tesla.com\"}");
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), 0);
  CHECK_INT(fq_jwt_fleet_base_url(&c, url, sizeof url), FQ_ENOTFOUND);
}

FQ_TEST(jwt_malformed_tokens_are_refused) {
  fq_jwt_claims_t c;
  fq_err_t err;
  CHECK_INT(fq_jwt_decode("abc", 3, &c, &err), FQ_EBADPARAM);
  CHECK_INT(fq_jwt_decode("a.b", 3, &c, &err), FQ_EBADPARAM);
  CHECK_INT(fq_jwt_decode("a.b.c.d", 7, &c, &err), FQ_EBADPARAM);
  CHECK_INT(fq_jwt_decode("a.!!!.c", 7, &c, &err), FQ_EBADPARAM);
  CHECK(strstr(err.msg, "base64url") != NULL);
  /* Standard-alphabet characters are not base64url. */
  CHECK_INT(fq_jwt_decode("a.eyJ+.c", 8, &c, &err), FQ_EBADPARAM);
  const char *t = make_token("[1,2]");
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), FQ_EBADPARAM);
  CHECK(strstr(err.msg, "JSON object") != NULL);
  t = make_token("{\"exp\":\"soon\"}");
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), FQ_EBADPARAM);
  CHECK_STR(err.msg, "token claim exp is not a number");
  t = make_token("{\"scp\":[\"vehicle_cmds\",3]}");
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), FQ_EBADPARAM);
  CHECK_INT(c.scopes, 0); /* nothing half-filled on error */
  t = make_token("{\"scp\":7}");
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), FQ_EBADPARAM);
  t = make_token("{\"sub\":\"a\",\"sub\":\"b\"}");
  CHECK_INT(fq_jwt_decode(t, strlen(t), &c, &err), FQ_EBADPARAM);
  /* Oversized. */
  size_t big = FQ_JWT_MAX + 1;
  char *huge = malloc(big);
  memset(huge, 'a', big);
  huge[10] = '.';
  huge[20] = '.';
  CHECK_INT(fq_jwt_decode(huge, big, &c, &err), FQ_ETOOLARGE);
  free(huge);
}

FQ_TEST(base64url_decode) {
  uint8_t out[16];
  CHECK_INT(fq_base64url_decode("_-8", 3, out, sizeof out), 2);
  CHECK_INT(out[0], 0xff);
  CHECK_INT(out[1], 0xef);
  CHECK_INT(fq_base64url_decode("Zm9vYg", 6, out, sizeof out), 4);
  CHECK_MEM(out, 4, "foob", 4);
  CHECK_INT(fq_base64url_decode("Zm9vYg", 6, out, 3), -1);
}
