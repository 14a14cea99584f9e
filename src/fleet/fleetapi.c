/*
 * Fleet API answer classification; see fleetapi.h.  Bodies are untrusted:
 * they are parsed with jansson under the HTTP layer's cap, and every piece
 * of them that reaches a reason text is cleaned to printable ASCII and
 * truncated.
 */
#include "fleetapi.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fleetq/commands.h"
#include "ratelimit.h"
#include "util.h"

static const char *const class_names[] = {
    "success",       "rejected",          "asleep",       "wrong_region", "legacy",
    "missing_scope", "protocol_required", "unauthorized", "rate_limited", "not_paired",
    "client_error",  "transient",         "unknown",      "account_refused",
};

const char *fq_fa_class_name(fq_fa_class_t c) {
  if ((unsigned)c < sizeof class_names / sizeof class_names[0]) return class_names[c];
  return "?";
}

static const struct {
  const char *region, *url;
} regions[] = {
    {"na", "https://fleet-api.prd.na.vn.cloud.tesla.com"},
    {"eu", "https://fleet-api.prd.eu.vn.cloud.tesla.com"},
    {"cn", "https://fleet-api.prd.cn.vn.cloud.tesla.cn"},
};

const char *fq_fa_region_base_url(const char *region) {
  if (!region) return NULL;
  for (size_t i = 0; i < sizeof regions / sizeof regions[0]; i++)
    if (strcmp(regions[i].region, region) == 0) return regions[i].url;
  return NULL;
}

const char *fq_fa_base_url_region(const char *base_url) {
  if (!base_url) return NULL;
  for (size_t i = 0; i < sizeof regions / sizeof regions[0]; i++) {
    size_t n = strlen(regions[i].url);
    if (strncasecmp(base_url, regions[i].url, n) != 0) continue;
    const char *p = base_url + n;
    while (*p == '/') p++;
    if (!*p) return regions[i].region;
  }
  return NULL;
}

static bool ends_with_ci(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n > m && strcasecmp(s + n - m, suf) == 0;
}

bool fq_fa_host_allowed(const char *host, const char *extra_host) {
  if (!host || !*host) return false;
  if (extra_host && *extra_host && strcasecmp(host, extra_host) == 0) return true;
  size_t n = strlen(host);
  if (n > 253) return false;
  for (size_t i = 0; i < n; i++) {
    char c = host[i];
    if (!(isalnum((unsigned char)c) || c == '-' || c == '.')) return false; /* no port, no @ */
    if (c == '.' && (i == 0 || host[i - 1] == '.')) return false;
  }
  return ends_with_ci(host, ".tesla.com") || ends_with_ci(host, ".tesla.cn") ||
         ends_with_ci(host, ".teslamotors.com");
}

int fq_fa_scope_reason(char *out, size_t cap, const char *scope, const char *client_id) {
  return snprintf(out, cap,
                  "missing OAuth scope %s: update the app's access at "
                  "https://auth.tesla.com/user/revoke/consent?revoke_client_id=%s and connect again",
                  scope && *scope ? scope : "(required by this command)",
                  client_id && *client_id ? client_id : "<client id>");
}

int fq_fa_pairing_reason(char *out, size_t cap, const char *domain) {
  return snprintf(out, cap,
                  "vehicle rejected request: your public key has not been paired with the "
                  "vehicle; pair it by opening https://tesla.com/_ak/%s on the phone with the "
                  "Tesla app",
                  domain && *domain ? domain : "<your domain>");
}

/* Printable ASCII only, at most cap-1 bytes. */
static void clean(char *out, size_t cap, const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; s && i < n && k + 1 < cap; i++)
    out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  out[k] = 0;
}

/* Case-insensitive search in a body that is not NUL-terminated. */
static const char *find_ci(const uint8_t *body, size_t len, const char *needle) {
  size_t m = strlen(needle);
  if (!body || m > len) return NULL;
  for (size_t i = 0; i + m <= len; i++)
    if (strncasecmp((const char *)body + i, needle, m) == 0) return (const char *)body + i;
  return NULL;
}

/* Copy a host that starts at p (at most `left` bytes available): letters,
 * digits, '-', '.', ':'; lower-cased; strips a ":443". */
static bool take_host(const char *p, size_t left, char *out, size_t cap) {
  size_t k = 0;
  while (k < left && k + 1 < cap &&
         (isalnum((unsigned char)p[k]) || p[k] == '-' || p[k] == '.' || p[k] == ':')) {
    out[k] = (char)tolower((unsigned char)p[k]);
    k++;
  }
  out[k] = 0;
  if (k >= 4 && strcmp(out + k - 4, ":443") == 0) out[k - 4] = 0;
  return out[0] != 0;
}

/* The host a 421 points to: the body's "use base URL: https://HOST", else
 * an Alt-Svc "h2=https://HOST" (or the standard h2="HOST:443"). */
static bool region_host(const fq_fa_input_t *in, char *host, size_t cap) {
  static const char pfx[] = "use base URL: https://";
  const char *p = find_ci(in->body, in->body_len, pfx);
  if (p) {
    p += sizeof pfx - 1;
    size_t left = in->body_len - (size_t)(p - (const char *)in->body);
    if (take_host(p, left, host, cap)) return true;
  }
  if (in->alt_svc && *in->alt_svc) {
    const char *a = strstr(in->alt_svc, "h2=");
    if (a) {
      a += 3;
      if (*a == '"') a++;
      if (strncasecmp(a, "https://", 8) == 0) a += 8;
      if (take_host(a, strlen(a), host, cap)) return true;
    }
  }
  return false;
}

static int64_t parse_delay_ms(const fq_fa_input_t *in) {
  const int64_t max = FQ_FA_RETRY_AFTER_MAX_MS;
  int64_t d = fq_rl_retry_after_ms(in->retry_after, in->now_unix_ms, max);
  if (d >= 0) return d;
  d = fq_rl_retry_after_ms(in->ratelimit_reset, in->now_unix_ms, max);
  if (d >= 0) return d;
  const char *p = find_ci(in->body, in->body_len, "retry in ");
  if (p) {
    p += 9;
    const char *end = (const char *)in->body + in->body_len;
    int64_t n = 0;
    int nd = 0;
    while (p < end && *p >= '0' && *p <= '9' && nd < 9) n = n * 10 + (*p++ - '0'), nd++;
    if (nd) return n * 1000 > max ? max : n * 1000;
  }
  return 60000; /* no hint: a minute, then ask again */
}

#define R(...) snprintf(out->reason, sizeof out->reason, __VA_ARGS__)

static void read_2xx(const fq_fa_input_t *in, json_t *root, fq_fa_result_t *out) {
  json_t *resp = root ? json_object_get(root, "response") : NULL;
  switch (in->endpoint) {
    case FQ_FA_EP_SIGNED: {
      long n = -1;
      if (json_is_string(resp) && in->rm_buf)
        n = fq_base64_decode(json_string_value(resp), json_string_length(resp), in->rm_buf,
                             in->rm_cap);
      if (n < 0) {
        out->cls = FQ_FA_UNKNOWN;
        out->code = FQ_EPROTO;
        out->may_have_executed = true;
        R("Fleet API answered %ld but the signed reply is unreadable", in->status);
        return;
      }
      out->rm_len = (size_t)n;
      out->cls = FQ_FA_SUCCESS;
      R("vehicle replied");
      return;
    }
    case FQ_FA_EP_WAKE: {
      const char *st = json_string_value(json_object_get(resp, "state"));
      if (st) clean(out->vehicle_state, sizeof out->vehicle_state, st, strlen(st));
      out->cls = FQ_FA_SUCCESS;
      R("vehicle state: %s", out->vehicle_state[0] ? out->vehicle_state : "unknown");
      return;
    }
    default:
      break;
  }
  json_t *res = json_is_object(resp) ? json_object_get(resp, "result") : NULL;
  if (json_is_boolean(res)) {
    out->has_result = true;
    out->result = json_is_true(res);
    const char *why = json_string_value(json_object_get(resp, "reason"));
    if (why) clean(out->car_reason, sizeof out->car_reason, why, strlen(why));
  }
  if (in->endpoint == FQ_FA_EP_REST_COMMAND && !out->has_result) {
    out->cls = FQ_FA_UNKNOWN;
    out->code = FQ_EPROTO;
    out->may_have_executed = true;
    R("Fleet API answered %ld without a command result", in->status);
    return;
  }
  if (out->has_result && !out->result) {
    /* The refusal table the signed path reads too (fq_cmd_refusal). */
    if (fq_cmd_refusal(in->command, out->car_reason) == FQ_REFUSAL_DONE) {
      out->cls = FQ_FA_SUCCESS;
      R("vehicle was already in the requested state (%s)", out->car_reason);
      return;
    }
    out->cls = FQ_FA_REJECTED;
    out->code = FQ_EFAULT;
    fq_cmd_refusal_reason(out->reason, sizeof out->reason, out->car_reason);
    return;
  }
  out->cls = FQ_FA_SUCCESS;
  R("done");
}

/* The common answer to a signed command, {"response":"<base64>"} with
 * nothing else, read without building a JSON tree: every command's reply
 * passes here.  Anything else goes the general way. */
static bool fast_signed_200(const fq_fa_input_t *in, fq_fa_result_t *out) {
  static const char head[] = "{\"response\":\"";
  const size_t hl = sizeof head - 1;
  if (in->endpoint != FQ_FA_EP_SIGNED || in->status != 200 || !in->rm_buf ||
      in->body_len < hl + 2 || memcmp(in->body, head, hl) != 0 ||
      memcmp(in->body + in->body_len - 2, "\"}", 2) != 0)
    return false;
  const char *b64 = (const char *)in->body + hl;
  size_t n = in->body_len - hl - 2;
  for (size_t i = 0; i < n; i++)
    if (b64[i] == '"' || b64[i] == '\\') return false;
  long got = fq_base64_decode(b64, n, in->rm_buf, in->rm_cap);
  if (got < 0) return false;
  out->rm_len = (size_t)got;
  out->cls = FQ_FA_SUCCESS;
  snprintf(out->reason, sizeof out->reason, "vehicle replied");
  return true;
}

int fq_fa_classify(const fq_fa_input_t *in, fq_fa_result_t *out) {
  if (!in || !out) return -EINVAL;
  memset(out, 0, sizeof *out);
  if (fast_signed_200(in, out)) return 0;
  json_t *root = NULL;
  if (in->body && in->body_len) {
    root = json_loadb((const char *)in->body, in->body_len, 0, NULL);
    if (root && !json_is_object(root)) {
      json_decref(root);
      root = NULL;
    }
  }
  const char *e = root ? json_string_value(json_object_get(root, "error")) : NULL;
  if (e) clean(out->error, sizeof out->error, e, strlen(e));
  /* What the server said, for reasons: the envelope's error, else the
   * start of a non-JSON body. */
  char said[128] = "";
  if (out->error[0]) snprintf(said, sizeof said, ": %.100s", out->error);
  else if (!root && in->body_len) {
    char tmp[100];
    clean(tmp, sizeof tmp, (const char *)in->body, in->body_len);
    snprintf(said, sizeof said, ": %s", tmp);
  }
  long s = in->status;
  bool vehicle_down = find_ci(in->body, in->body_len, "offline or asleep") ||
                      find_ci(in->body, in->body_len, "vehicle is offline") ||
                      find_ci(in->body, in->body_len, "vehicle unavailable");

  if (s >= 200 && s < 300) {
    read_2xx(in, root, out);
  } else if (s == 408 || ((s == 503 || s == 500) && vehicle_down)) {
    out->cls = FQ_FA_ASLEEP;
    out->code = FQ_EBUSY;
    R("vehicle is asleep or offline (HTTP %ld): waking it", s);
  } else if (s == 503 && (in->endpoint == FQ_FA_EP_SIGNED ||
                          in->endpoint == FQ_FA_EP_REST_COMMAND)) {
    /* Tesla's own client reads every 503 to a vehicle command as "not
     * awake" (nothing reached the car): wake it, within --wake-max,
     * rather than resend the same request until the deadline. */
    out->cls = FQ_FA_ASLEEP;
    out->code = FQ_EBUSY;
    R("Fleet API answered HTTP 503%s to a vehicle command: taking the vehicle as not awake, "
      "waking it", said);
  } else if (s == 401) {
    if (find_ci(in->body, in->body_len, "mobile_access_disabled")) {
      out->cls = FQ_FA_ACCOUNT_REFUSED;
      out->code = FQ_EMOBILEOFF;
      R("the vehicle owner turned off Mobile access (HTTP 401 mobile_access_disabled): enable "
        "'Allow Mobile Access' in the car's Safety settings, then send again");
    } else {
      out->cls = FQ_FA_UNAUTHORIZED;
      out->code = FQ_EAUTH;
      R("access token rejected (HTTP 401%s): refreshing the token and trying once more", said);
    }
  } else if (s == 403) {
    if (find_ci(in->body, in->body_len, "missing scope") ||
        find_ci(in->body, in->body_len, "invalid_scope")) {
      out->cls = FQ_FA_MISSING_SCOPE;
      out->code = FQ_ESCOPE;
      fq_fa_scope_reason(out->reason, sizeof out->reason, in->scope_name, in->client_id);
    } else if (find_ci(in->body, in->body_len, "Vehicle Command Protocol required")) {
      out->cls = FQ_FA_PROTOCOL_REQUIRED;
      out->code = FQ_EFORBIDDEN;
      R("vehicle requires signed commands (Vehicle Command Protocol, HTTP 403)");
    } else {
      out->cls = FQ_FA_CLIENT_ERROR;
      out->code = FQ_EFORBIDDEN;
      R("Fleet API refused access (HTTP 403%s): check that the account owns this device and "
        "that the app is allowed to command it", said);
    }
  } else if (s == 421) {
    char host[240]; /* 253 is DNS's limit; Tesla's hosts are ~40 */
    if (region_host(in, host, sizeof host) && fq_fa_host_allowed(host, in->extra_host)) {
      out->cls = FQ_FA_WRONG_REGION;
      out->code = FQ_EHTTP;
      snprintf(out->base_url, sizeof out->base_url, "https://%s", host);
      R("account belongs to another region: switching to %s", out->base_url);
    } else {
      out->cls = FQ_FA_CLIENT_ERROR;
      out->code = FQ_EHTTP;
      R("Fleet API says the account is in another region (HTTP 421) but names no Tesla host "
        "to use; set the account's region or base URL with 'fleetq account add'");
    }
  } else if (s == 422 && in->endpoint == FQ_FA_EP_SIGNED) {
    out->cls = FQ_FA_LEGACY;
    out->code = FQ_EPROTO;
    R("vehicle does not support the Vehicle Command Protocol: using the REST command endpoint");
  } else if (s == 429) {
    out->cls = FQ_FA_RATE_LIMITED;
    out->code = FQ_EBUSY;
    out->retry_after_ms = parse_delay_ms(in);
    R("rate limited by Fleet API (HTTP 429): waiting %lld s before the next request",
      (long long)((out->retry_after_ms + 999) / 1000));
  } else if (s == 500 && find_ci(in->body, in->body_len, "has not been paired")) {
    out->cls = FQ_FA_NOT_PAIRED;
    out->code = FQ_ENOTPAIRED;
    R("vehicle rejected request: your public key has not been paired with the vehicle");
  } else if (s == 503) {
    out->cls = FQ_FA_TRANSIENT;
    out->code = FQ_EHTTP;
    out->retry_after_ms = 1000;
    R("Fleet API temporarily unavailable (HTTP 503%s): retrying", said);
  } else if (s >= 500 || s < 200) {
    out->cls = FQ_FA_UNKNOWN;
    out->code = FQ_EHTTP;
    out->may_have_executed = true;
    if (s == 540)
      R("vehicle returned an unexpected response (HTTP 540: it may need a reboot or service)");
    else
      R("no definitive answer from Fleet API (HTTP %ld%s)", s, said);
  } else {
    out->cls = FQ_FA_CLIENT_ERROR;
    switch (s) {
      case 400:
        out->code = FQ_EBADPARAM;
        R("Fleet API refused the request as malformed (HTTP 400%s): the command or its "
          "parameters are not accepted for this device", said);
        break;
      case 402:
        out->code = FQ_EFORBIDDEN;
        R("Fleet API billing limit reached or no payment method (HTTP 402): check the "
          "developer account's billing at developer.tesla.com");
        break;
      case 404:
        out->code = FQ_ENOTFOUND;
        R("device not found (HTTP 404%s): check the VIN or site id and that the account "
          "owns it", said);
        break;
      case 412:
        out->cls = FQ_FA_ACCOUNT_REFUSED;
        out->code = FQ_ENOTREGISTERED;
        R("application not registered in this region (HTTP 412): register the app's domain "
          "with POST /api/1/partner_accounts in this region");
        break;
      case 422:
        out->code = FQ_EBADPARAM;
        R("Fleet API rejected the request as invalid (HTTP 422%s)", said);
        break;
      case 423:
        out->code = FQ_EFORBIDDEN;
        R("Tesla account locked (HTTP 423): the owner must contact Tesla");
        break;
      case 451:
        out->cls = FQ_FA_ACCOUNT_REFUSED;
        out->code = FQ_ELEGAL;
        R("refused for legal or privacy reasons (HTTP 451): check the vehicle's data sharing "
          "settings and the account's region");
        break;
      default:
        out->code = FQ_EHTTP;
        if (s >= 300 && s < 400)
          R("Fleet API answered with a redirect (HTTP %ld), which fleetq never follows: check "
            "the account's base URL", s);
        else
          R("Fleet API refused the request (HTTP %ld%s)", s, said);
    }
  }
  json_decref(root);
  return 0;
}

void fq_fa_classify_transport(fq_http_outcome_t outcome, const char *detail, fq_fa_result_t *out) {
  memset(out, 0, sizeof *out);
  char d[200];
  clean(d, sizeof d, detail ? detail : "", detail ? strlen(detail) : 0);
  switch (outcome) {
    case FQ_HTTP_COMPLETE:
      out->cls = FQ_FA_SUCCESS; /* misuse: classify the answer with fq_fa_classify() */
      R("complete");
      break;
    case FQ_HTTP_NOT_SENT:
      out->cls = FQ_FA_TRANSIENT;
      out->code = FQ_EHTTP;
      out->retry_after_ms = 1000;
      R("could not reach Fleet API (%s): nothing was sent, retrying", d);
      break;
    case FQ_HTTP_TRUNCATED:
      out->cls = FQ_FA_UNKNOWN;
      out->code = FQ_ETOOLARGE;
      out->may_have_executed = true;
      R("Fleet API reply too large to read (%s)", d);
      break;
    case FQ_HTTP_UNKNOWN:
    default:
      out->cls = FQ_FA_UNKNOWN;
      out->code = FQ_EHTTP;
      out->may_have_executed = true;
      R("reply from Fleet API lost (%s)", d);
      break;
  }
}
