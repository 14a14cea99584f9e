/*
 * Fuzz target for the parsers of Fleet API and OAuth bytes: every input is
 * fed to fq_jwt_decode(), fq_fa_classify() (every endpoint kind, with the
 * input also used as header values), fq_oauth_parse_response() and
 * fq_rl_parse_retry_after(), and the results are checked, not just
 * survived: reasons are bounded printable ASCII, a decoded signed reply
 * fits its buffer, a region switch only ever names an allowed host, a
 * failed decode leaves no claims behind.
 *
 * Built two ways, like fuzz_wire:
 *  - with -DFQ_LIBFUZZER and -fsanitize=fuzzer (cmake -DFQ_FUZZ=ON, clang);
 *  - without it: a plain driver (ctest `fuzz_fleet_seeds`) that runs the
 *    built-in seeds, then a fixed number of deterministic mutations of them
 *    from a logged seed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetapi.h"
#include "jwt.h"
#include "oauth.h"
#include "ratelimit.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                      \
  do {                                                 \
    fprintf(stderr, "fuzz_fleet: invariant broken: "); \
    fprintf(stderr, __VA_ARGS__);                      \
    fprintf(stderr, "\n");                             \
    abort();                                           \
  } while (0)

static void printable(const char *s, size_t cap, const char *what) {
  size_t n = strnlen(s, cap);
  if (n == cap) FAIL("%s not NUL-terminated", what);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
      FAIL("%s has byte 0x%02x at %zu", what, (unsigned char)s[i], i);
}

static const long statuses[] = {200, 201, 302, 400, 401, 403, 404, 408, 412,
                                421, 422, 429, 451, 500, 503, 504, 540, 0};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A NUL-terminated copy for the string-typed entry points. */
  char *str = malloc(size + 1);
  if (!str) return 0;
  memcpy(str, data, size);
  str[size] = 0;

  fq_jwt_claims_t c;
  fq_err_t err;
  int rc = fq_jwt_decode((const char *)data, size, &c, &err);
  if (rc == 0) {
    printable(c.sub, sizeof c.sub, "sub");
    printable(c.ou_code, sizeof c.ou_code, "ou_code");
    if (c.naud > FQ_JWT_MAX_AUD) FAIL("naud %zu", c.naud);
    for (size_t i = 0; i < c.naud; i++) printable(c.aud[i], sizeof c.aud[i], "aud");
    char url[300];
    if (fq_jwt_fleet_base_url(&c, url, sizeof url) == 0) {
      if (strncmp(url, "https://fleet-api.", 18) != 0) FAIL("fleet url %s", url);
      if (!fq_fa_host_allowed(url + 8, NULL)) FAIL("token host not allowed: %s", url);
    }
  } else if (c.scopes || c.exp || c.naud || c.sub[0]) {
    FAIL("failed decode (%d) left claims behind", rc);
  }

  uint8_t rm[256];
  for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
    for (int ep = FQ_FA_EP_SIGNED; ep <= FQ_FA_EP_OTHER; ep++) {
      fq_fa_input_t in = {.status = statuses[i], .body = data, .body_len = size,
                          .retry_after = str, .alt_svc = str, .ratelimit_reset = NULL,
                          .endpoint = (fq_fa_endpoint_t)ep, .command = "charge_start",
                          .scope_name = "vehicle_cmds", .client_id = "cid",
                          .extra_host = (i & 1) ? "127.0.0.1:8443" : NULL,
                          .now_unix_ms = 1700000000000LL, .rm_buf = rm, .rm_cap = sizeof rm};
      fq_fa_result_t r;
      if (fq_fa_classify(&in, &r) != 0) FAIL("classify refused valid arguments");
      if ((unsigned)r.cls > FQ_FA_ACCOUNT_REFUSED) FAIL("class %d out of range", (int)r.cls);
      printable(r.reason, sizeof r.reason, "reason");
      printable(r.error, sizeof r.error, "error");
      printable(r.car_reason, sizeof r.car_reason, "car_reason");
      printable(r.vehicle_state, sizeof r.vehicle_state, "vehicle_state");
      if (r.rm_len > sizeof rm) FAIL("rm_len %zu over its buffer", r.rm_len);
      if (r.may_have_executed != (r.cls == FQ_FA_UNKNOWN)) FAIL("may_have_executed mismatch");
      if (r.cls == FQ_FA_WRONG_REGION) {
        if (strncmp(r.base_url, "https://", 8) != 0) FAIL("base_url %s", r.base_url);
        if (!fq_fa_host_allowed(r.base_url + 8, in.extra_host))
          FAIL("switch to a host that is not allowed: %s", r.base_url);
      }
      if (r.cls == FQ_FA_RATE_LIMITED && r.retry_after_ms < 0) FAIL("negative delay");
      if (r.cls == FQ_FA_RATE_LIMITED && r.retry_after_ms > FQ_FA_RETRY_AFTER_MAX_MS)
        FAIL("delay %lld ms past the cap", (long long)r.retry_after_ms);
      if (r.cls != FQ_FA_SUCCESS && r.code == 0) FAIL("failure class without a code");
    }
  }

  fq_oauth_result_t *o = malloc(sizeof *o);
  if (o) {
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
      if (fq_oauth_parse_response(statuses[i], data, size, str, 1700000000, o) != 0)
        FAIL("oauth parse refused valid arguments");
      printable(o->reason, sizeof o->reason, "oauth reason");
      printable(o->error, sizeof o->error, "oauth error");
      if (o->status == FQ_OAUTH_OK && (statuses[i] != 200 || !o->access_token[0]))
        FAIL("OK without a 200 and a token");
      if (strnlen(o->access_token, sizeof o->access_token) == sizeof o->access_token)
        FAIL("access token not terminated");
    }
    fq_oauth_result_wipe(o);
    free(o);
  }

  int64_t d = fq_rl_parse_retry_after(str, 1700000000000LL);
  if (d < -1) FAIL("retry-after %lld", (long long)d);
  uint8_t out[64];
  long n = fq_base64url_decode(str, strlen(str), out, sizeof out);
  if (n > (long)sizeof out) FAIL("base64url wrote %ld bytes into 64", n);
  free(str);
  return 0;
}

#ifndef FQ_LIBFUZZER
/* Seeds: real-world shaped answers and tokens. */
static const char *const seeds[] = {
    "{\"response\":{\"result\":true,\"reason\":\"\"}}",
    "{\"response\":{\"result\":false,\"reason\":\"is_charging\"}}",
    "{\"response\":\"MgQIAhAD\"}",
    "{\"response\":{\"state\":\"online\"}}",
    "{\"response\":null,\"error\":\"user out of region, use base URL: "
    "https://fleet-api.prd.eu.vn.cloud.tesla.com/, see https://developer.tesla.com\"}",
    "{\"error\":\"use base URL: https://127.0.0.1:8443/\"}",
    "h2=https://fleet-api.prd.na.vn.cloud.tesla.com",
    "{\"response\":null,\"error\":\"Unauthorized missing scopes\"}",
    "{\"error\":\"Tesla Vehicle Command Protocol required, please refer\"}",
    "{\"error\":\"vehicle unavailable: vehicle is offline or asleep\"}",
    "{\"error\":\"vehicle rejected request: your public key has not been paired with the vehicle\"}",
    "{\"error\":\"Retry in 48472 seconds\"}",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "120",
    "{\"access_token\":\"eyJhbGciOiJub25lIn0.eyJzY3AiOlsiZW5lcmd5X2NtZHMiXSwiZXhwIjoxNzAwMDAwMDAwfQ.x\","
    "\"refresh_token\":\"NA_x\",\"expires_in\":28800}",
    "{\"error\":\"login_required\",\"error_description\":\"x\"}",
    "eyJhbGciOiJub25lIn0.eyJzY3AiOlsiZW5lcmd5X2NtZHMiXSwiZXhwIjoxNzAwMDAwMDAwfQ.x",
    "eyJhbGciOiJub25lIn0.eyJhdWQiOlsiaHR0cHM6Ly9mbGVldC1hcGkucHJkLm5hLnZuLmNsb3VkLnRlc2xhLmNvbSJdLCJvdV9jb2RlIjoiTkEifQ.x",
    "",
};

int main(int argc, char **argv) {
  unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
  uint32_t seed = 20261129u;
  size_t nseeds = sizeof seeds / sizeof seeds[0];
  printf("fuzz_fleet: %zu seeds, %lu mutations, seed %u\n", nseeds, iters, seed);
  for (size_t i = 0; i < nseeds; i++)
    LLVMFuzzerTestOneInput((const uint8_t *)seeds[i], strlen(seeds[i]));
  uint8_t buf[1024];
  for (unsigned long it = 0; it < iters; it++) {
    seed = seed * 1664525u + 1013904223u;
    const char *s = seeds[(seed >> 8) % nseeds];
    size_t n = strlen(s);
    if (n > sizeof buf) n = sizeof buf;
    memcpy(buf, s, n);
    int edits = 1 + (int)((seed >> 20) % 8);
    for (int e = 0; e < edits; e++) {
      seed = seed * 1664525u + 1013904223u;
      unsigned op = seed % 4, pos = n ? (seed >> 8) % (unsigned)n : 0;
      uint8_t byte = (uint8_t)(seed >> 24);
      if (op == 0 && n) buf[pos] = byte;                       /* replace */
      else if (op == 1 && n) buf[pos] ^= (uint8_t)(1u << (byte & 7)); /* flip */
      else if (op == 2 && n) n = pos;                          /* truncate */
      else if (op == 3 && n < sizeof buf) {                    /* insert */
        memmove(buf + pos + 1, buf + pos, n - pos);
        buf[pos] = byte;
        n++;
      }
    }
    LLVMFuzzerTestOneInput(buf, n);
  }
  printf("fuzz_fleet: ok\n");
  return 0;
}
#endif
